"""evol's tests, one folder per source package (tests/method/ tests evol.method, ...); the
helpers they share are the package tests.support, fixtures and hooks are in conftest.py."""
