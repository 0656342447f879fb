"""The one rule for text tmon stores: what SQLite and PostgreSQL both take, the same on both.

What a run produces (log lines, warning messages, checkpoint paths, event types, names) comes from
the user's code and the file system, and can hold what a database refuses: a lone surrogate (a
file name that is not UTF-8, decoded by ``os.fsdecode``; SQLite's driver cannot encode it),
NUL (PostgreSQL text cannot hold it), more characters than a ``VARCHAR(n)`` column takes
(PostgreSQL refuses, SQLite keeps it: the same run would read back differently). The writer
makes every text field storable with ``storable()`` instead of losing the record:

* a lone surrogate is written as its escape (``\\udcff``), so the bytes it stood for stay readable;
* NUL is removed;
* text longer than its column is cut to fit, ending with ``CUT_MARK`` and the number of
  characters cut, so a reader sees that it was cut.

Values the user gives once, at construction (a run's name, tags, notes), are checked instead
(``check_text``): refused with a ``ValueError`` naming the option, never rewritten.
"""

from __future__ import annotations

#: the most characters kept of an unbounded text column (a message, a path, a JSON document):
#: one record must not become a write of hundreds of megabytes
MAX_TEXT = 1_000_000
#: ends a cut text, followed by how many characters were cut: ``"…[+1234 chars]"``
CUT_MARK = "…[+"
MAX_RUN_NAME = 250
MAX_TAG = 250
MAX_NOTES = 100_000
MAX_GROUP = 250  # tmon_runs.group_name


def storable(text: str, limit: int | None = None) -> str:
    """``text`` as both databases store it: surrogates escaped, NUL removed, at most ``limit``
    characters (``MAX_TEXT`` when None), a cut text ending with the marker."""
    if limit is None:
        limit = MAX_TEXT
    if text.isascii():  # the usual case: only NUL and the length can be wrong
        if "\x00" in text:
            text = text.replace("\x00", "")
    else:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            text = text.encode("utf-8", "backslashreplace").decode("utf-8")
        if "\x00" in text:
            text = text.replace("\x00", "")
    if len(text) > limit:
        text = cut(text, limit)
    return text


def cut(text: str, limit: int) -> str:
    """``text`` in at most ``limit`` characters, ending with the marker when it was longer."""
    if len(text) <= limit:
        return text
    n = len(text) - limit  # characters cut: grows with the marker's own length, to a fixed point
    while True:
        mark = f"{CUT_MARK}{n} chars]"
        keep = limit - len(mark)
        if keep < 0:  # a column too narrow for the count (a level, a status): "…" alone
            return text[: limit - 1] + "…" if limit > 0 else ""
        if len(text) - keep == n:
            return text[:keep] + mark
        n = len(text) - keep


def problem(text: str, limit: int | None = None) -> str | None:
    """What the databases would refuse in ``text`` (said for an error message), or None."""
    if "\x00" in text:
        return f"contains NUL (\\x00) at position {text.index(chr(0))}"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            return f"contains a lone surrogate ({text[exc.start]!r}) at position {exc.start}, which is not valid Unicode"
    if limit is not None and len(text) > limit:
        return f"is {len(text)} characters long; at most {limit} are stored"
    return None


def check_text(name: str, value: str, limit: int) -> str:
    """``value`` if the store keeps it as it is, else a ``ValueError`` naming option ``name``."""
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, received {name}={value!r}")
    why = problem(value, limit)
    if why is not None:
        shown = value if len(value) <= 80 else value[:80] + "..."
        raise ValueError(
            f"{name} must be text the store can keep as it is (at most {limit} characters, no NUL, "
            f"no lone surrogates): {name}={shown!r} {why}"
        )
    return value
