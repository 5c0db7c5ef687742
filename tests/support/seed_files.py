"""Seed files that evol refuses: each bad file, the line its error names and what the message
says, shared by the seed reader's tests and the run's (a bad seeds file never starts a run)."""

from __future__ import annotations

# (case, file name, content, line named in the error or None, part of the message)
BAD_FILES = [
    (
        "invalid JSON line",
        "s.jsonl",
        b'{"instruction": "a"}\n{"instruction": \n',
        2,
        "invalid JSON",
    ),
    ("blank line", "s.jsonl", b'{"instruction": "a"}\n\n{"instruction": "b"}\n', 2, "blank line"),
    ("non-UTF-8", "s.jsonl", b'{"instruction": "a"}\n{"instruction": "\xff"}\n', 2, "UTF-8"),
    ("missing field", "s.jsonl", b'{"text": "a"}\n', 1, "no 'instruction'"),
    ("non-string instruction", "s.jsonl", b'{"instruction": 5}\n', 1, "must be a string"),
    ("empty instruction", "s.jsonl", b'{"instruction": "  "}\n', 1, "is empty"),
    ("not an object", "s.jsonl", b'{"instruction": "a"}\n[1, 2]\n', 2, "expected an object"),
    (
        "array as JSONL",
        "s.jsonl",
        b'[{"instruction": "a"},\n {"instruction": "b"}]\n',
        1,
        "JSON array",
    ),
    ("NUL byte", "s.jsonl", b'{"instruction": "a"}\n{"instruction": "b\x00"}\n', 2, "NUL"),
    (
        "duplicate id",
        "s.jsonl",
        b'{"id": 1, "instruction": "a"}\n{"id": "1", "instruction": "b"}\n',
        2,
        "duplicate id",
    ),
    (
        "id colliding with an evolution",
        "s.jsonl",
        b'{"id": "a", "instruction": "a"}\n{"id": "a.2", "instruction": "b"}\n',
        2,
        "collides",
    ),
    (
        "non-string input",
        "s.jsonl",
        b'{"instruction": "a", "input": 3}\n',
        1,
        "'input' must be a string",
    ),
    ("huge row", "s.jsonl", b'{"instruction": "' + b"x" * 10_000_000 + b'"}\n', 1, "MB"),
    ("CSV without header", "s.csv", b"What is 2+2?\nName a color\n", 1, "header"),
    ("CSV ragged row", "s.csv", b"instruction,input\na,b,c\n", 2, "columns"),
    ("JSON not an array", "s.json", b'{"instruction": "a"}', 1, "JSON array"),
    (
        "broken JSON array",
        "s.json",
        b'[\n{"instruction": "a"},\n{"instruction": }\n]',
        3,
        "invalid JSON",
    ),
    ("empty file", "s.jsonl", b"", None, "no seeds"),
    # Python's int() refuses more than 4,300 digits: a ValueError that is not a JSON error.
    (
        "huge integer in JSON Lines",
        "s.jsonl",
        b'{"instruction": "a"}\n{"instruction": "b", "n": ' + b"9" * 5000 + b"}\n",
        2,
        "invalid JSON: a number longer than 4300 digits",
    ),
    (
        "huge integer in a JSON array",
        "s.json",
        b'[\n {"instruction": "a"},\n\n {"instruction": "b", "n": ' + b"9" * 5000 + b"}\n]\n",
        4,
        "invalid JSON: a number longer than 4300 digits",
    ),
    ("only blank lines", "s.txt", b"\n\n  \n", None, "no seeds"),
]
