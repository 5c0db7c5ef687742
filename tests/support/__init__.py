"""What the tests share: fake servers on 127.0.0.1 (fake_server, batch_server, hostile_server,
each a background_server), running evol and the run directories it writes (runs,
subprocesses), backends registered for a while (backends), the backends and runs that scoring
and selection tests score (scoring, selection), and the helpers of one concern that several
test modules use (contamination, verifiable, shards, seed_files, transport, real_model,
batch_backend, make). A test module imports its helpers from here, never from another test
module."""
