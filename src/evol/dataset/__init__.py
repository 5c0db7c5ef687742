"""What is done with a finished run: merge its shards, export, show, report, stats, verify."""
