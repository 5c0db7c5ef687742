"""The operating system's limits on this process that a run can reach: open files, file size.

Read for the messages that name them and for the check before a run; `resource` exists on
POSIX only, so elsewhere the limits are unknown (None) and nothing is checked.
"""

from __future__ import annotations


def open_file_limit() -> int | None:
    """The soft limit on open files (`ulimit -n`), or None when there is none or no way to ask."""
    return _soft_limit("RLIMIT_NOFILE")


def file_size_limit() -> int | None:
    """The soft limit on a file's size in bytes (`ulimit -f` counts blocks), or None."""
    return _soft_limit("RLIMIT_FSIZE")


def _soft_limit(name: str) -> int | None:
    try:
        import resource
    except ImportError:
        return None
    soft, _hard = resource.getrlimit(getattr(resource, name))
    return None if soft == resource.RLIM_INFINITY else soft
