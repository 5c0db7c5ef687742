"""The failures a user can act on, each its own type with the exit code the CLI gives it.

The CLI catches `EvolError` once and prints `str(error)` as one line; anything else is a bug
and gets a traceback only with `--debug`.
"""

from __future__ import annotations

import copy
import errno
from pathlib import Path
from typing import Any

from evol.oslimits import file_size_limit, open_file_limit


class EvolError(Exception):
    """Base of every user-facing failure."""

    exit_code = 2

    def __reduce__(self) -> tuple[Any, ...]:
        # Copied and pickled as it is, without calling __init__ again: a subclass's own
        # arguments (StorageError's path and OSError) are not its args, and the batch backend
        # gives each waiting caller a copy of a failure (a TypeError there left them waiting).
        return _rebuilt, (type(self), self.args, self.__dict__)


def _rebuilt(cls: type[EvolError], args: tuple[Any, ...], state: dict[str, Any]) -> EvolError:
    """An `EvolError` with these args and attributes, its __init__ not called."""
    error = cls.__new__(cls, *args)
    error.__dict__.update(state)
    return error


class UsageError(EvolError):
    """Options that do not fit together, or a value out of range."""


class SeedFileError(EvolError):
    """A seed file that cannot be read, or one of its rows that is not a valid seed."""

    def __init__(self, path: str, line: int | None, why: str):
        self.path, self.line, self.why = path, line, why
        where = f"{path}:{line}" if line is not None else str(path)
        super().__init__(f"{where}: {why}")


class PromptError(EvolError):
    """A prompt template that is missing or has placeholders we cannot fill."""


class RunDirError(EvolError):
    """An output directory that cannot be used (a file, unreadable, corrupt manifest)."""


class StorageError(RunDirError):
    """A file that cannot be written: a full disk, a file-size or open-file limit, a fault.

    Every line written before it is whole (a failed append is taken back), so once the cause
    is fixed the same command goes on from there.
    """

    def __init__(self, path: Path | str, error: OSError):
        self.path, self.strerror = Path(path), error.strerror or str(error)
        super().__init__(f"{path}: cannot write it: {storage_failure(error)}")


# What the OS says when it runs out of something a write needs: a user can act on each.
OUT_OF_RESOURCES = frozenset({errno.EMFILE, errno.ENFILE, errno.EFBIG, errno.ENOSPC, errno.EDQUOT})


def storage_failure(error: OSError) -> str:
    """What an OS error on a write means, with what to do about it."""
    why = error.strerror or str(error)
    if error.errno in (errno.EMFILE, errno.ENFILE):
        limit = open_file_limit()
        return (
            f"too many open files: the limit is {limit if limit is not None else 'unknown'} "
            "(ulimit -n), lower --concurrency or raise the limit"
        )
    if error.errno == errno.EFBIG:
        limit = file_size_limit()
        shown = f" of {limit:,} bytes" if limit is not None else ""
        return (
            f"{why}: the file-size limit{shown} (ulimit -f) is reached: raise it, then run the "
            "same command again"
        )
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        return f"{why}: free some space, then run the same command again"
    return why


class ConfigMismatch(EvolError):
    """An existing run directory was made with other options than the ones given now."""

    def __init__(self, out_dir: str, differences: dict[str, tuple[object, object]]):
        self.differences = differences
        names = ", ".join(
            f"{name} (run has {old!r}, now {new!r})" for name, (old, new) in differences.items()
        )
        super().__init__(
            f"{out_dir} holds a run made with other options: {names}; "
            "use the same options to resume, another --out, or --overwrite to start afresh"
        )


class MergeError(EvolError):
    """Run directories that `evol merge` cannot join: not complete, other options, shards
    that overlap or are missing."""


class BackendError(EvolError):
    """A request the backend refused for good: retrying the same request cannot help."""

    exit_code = 1


class AuthenticationFailed(BackendError):
    """The endpoint rejected our credentials: stop the whole run, retrying would only storm."""

    exit_code = 2


class ModelNotFound(BackendError):
    """The endpoint does not serve the model we asked for."""

    exit_code = 2


class EndpointUnreachable(BackendError):
    """No connection to an endpoint (DNS, refused, TLS) that never answered, or that stopped
    answering for good: stop the run and say why. Everything finished is kept for a resume."""

    exit_code = 2


class Redirected(BackendError):
    """The endpoint answered a request with a redirect: --base-url points at the wrong place."""

    exit_code = 2


class ContextLengthExceeded(BackendError):
    """The prompt does not fit the model's context: the item is eliminated as `too_long`."""


class TransientBackendError(Exception):
    """A failure worth retrying (429, 5xx, timeout, dropped connection, garbled body).

    Not an `EvolError`: it never reaches the user unless the retries run out, and then the
    engine records the item as failed rather than stopping the run.
    """

    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class GarbledReply(TransientBackendError):
    """A 2xx reply whose body is no chat completion: retried like any transient failure (a
    proxy may have garbled it), but a caller may give up on that one reply once the retries
    are spent rather than stop (`evol optimize` refuses the candidate it would have been)."""


class RateLimited(TransientBackendError):
    """A 429: retried like any transient failure, and a signal to send less at once."""


class Unreachable(TransientBackendError):
    """No connection to an endpoint that has answered before in this run (it may be
    restarting). When the retries run out, the engine stops the run with `EndpointUnreachable`
    instead of failing every step one by one."""


class Deferred(Exception):
    """The backend took the request but answers it in a later process (`--batch-no-wait`):
    the step waits, nothing is recorded, and the run ends as `pending`."""


class Interrupted(EvolError):
    """The run was stopped by SIGINT or SIGTERM after saving what was finished."""

    exit_code = 130


def most_telling(errors: BaseExceptionGroup) -> BaseException:
    """The error to surface from a task group's failures: the first one a user can act on (an
    `EvolError`), else the first of all."""
    flat: list[BaseException] = []
    stack: list[BaseException] = [errors]
    while stack:
        error = stack.pop(0)
        if isinstance(error, BaseExceptionGroup):
            stack[:0] = list(error.exceptions)
        else:
            flat.append(error)
    return next((error for error in flat if isinstance(error, EvolError)), flat[0])


class ConstraintError(EvolError):
    """A constraint evol cannot check: the extra is missing, or an id or its kwargs are not
    what IFEval's checker takes."""


def own_copy(error: BaseException) -> BaseException:
    """A copy of `error` for one more caller (each raise adds to an error's traceback), or
    `error` itself where it cannot be copied: a library's error whose __init__ takes arguments
    that are not its args (the SDK's APIConnectionError) must still reach every caller."""
    try:
        return copy.copy(error)
    except Exception:
        return error
