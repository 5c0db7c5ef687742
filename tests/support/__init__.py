"""What the tests share: fake servers on 127.0.0.1 (fake_server, batch_server,
hostile_server), running evol and the run directories it writes (runs), backends registered
for a while (backends), and the backends and runs that scoring and selection tests score
(scoring, selection)."""
