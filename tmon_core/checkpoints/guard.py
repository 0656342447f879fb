"""Checks made before a checkpoint's bytes are trusted: what kind of file a path is, how deep and
how large a JSON document may be, what a shape may claim, how many members a zip may list.

A checkpoint is input from anywhere (a download, a shared disk), and every number in its header
is a claim: a shape of 2**62 elements, an offset past the end, a header nested 200,000 deep, a
zip member that inflates a thousandfold. Each is checked here against what the file can hold,
before memory or time is spent on it, and refused with a ``CheckpointError`` naming the field.

Only regular files (and directories, for Hugging Face checkpoints) are opened: a FIFO would
block ``open()`` forever, a device like ``/dev/zero`` never ends, a socket is not a file. The
type is checked with ``stat`` (which follows symlinks) before opening, and again with ``fstat``
on what was opened, so a path swapped in between is caught too.
"""

from __future__ import annotations

import json
import math
import os
import re
import stat
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from .errors import CheckpointError

#: deepest nesting accepted in a JSON document of a checkpoint (config.json, safetensors header...);
#: real ones stay under 20, and Python's parser fails with a RecursionError near 1,000
MAX_JSON_DEPTH = 100
#: largest side JSON file read whole (config.json, trainer_state.json, a shard index): parsed, JSON
#: takes up to ~10x its size in Python objects; a trainer_state.json of a million logged steps is ~150 MB
MAX_JSON_BYTES = 192 * 1024 * 1024
#: most dimensions a tensor may have (torch allows 64 at most in practice)
MAX_RANK = 64
#: most members a zip (torch checkpoint, .keras archive) may list: each costs Python ~500 bytes
MAX_ZIP_MEMBERS = 200_000
#: a compressed zip member may inflate MAX_ZIP_RATIO times its compressed size, once over MAX_SMALL_MEMBER
MAX_ZIP_RATIO = 100
MAX_SMALL_MEMBER = 64 * 1024 * 1024

_KIND = (
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISDIR, "a directory"),
)


def _kind(mode: int) -> str:
    return next((name for test, name in _KIND if test(mode)), "not a regular file")


def entry(path: str, *, dir_ok: bool = True) -> os.stat_result:
    """``os.stat(path)`` (through symlinks) of a regular file, or a directory when ``dir_ok``;
    anything else is refused without being opened."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        dangling = " (a symlink to a missing file)" if os.path.islink(path) else ""
        raise CheckpointError(path, f"no such file or directory{dangling}") from None
    except OSError as exc:
        raise CheckpointError(path, f"cannot read: {exc.strerror or exc}") from None
    except ValueError:  # os.stat's answer to a NUL byte in the path
        raise CheckpointError(path, "not a usable path: it holds a NUL byte") from None
    if stat.S_ISREG(st.st_mode) or dir_ok and stat.S_ISDIR(st.st_mode):
        return st
    target = f" (a symlink to {os.path.realpath(path)})" if os.path.islink(path) else ""
    raise CheckpointError(
        path,
        f"{_kind(st.st_mode)}{target}, not a regular file: not opened (tmon diff reads "
        "checkpoint files and checkpoint directories only)",
    )


def open_regular(path: str) -> tuple[int, int]:
    """``(fd, size)`` of ``path`` opened read-only, once it is known to be a regular file."""
    before = entry(path, dir_ok=False)
    # O_NONBLOCK: if a FIFO was swapped in since the stat, open() returns instead of waiting for a writer
    flags = (
        os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0)
    )
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise CheckpointError(path, f"cannot open: {exc.strerror or exc}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or (st.st_dev, st.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise CheckpointError(
            path,
            "the file was replaced while being opened (now "
            f"{'a regular file' if stat.S_ISREG(st.st_mode) else _kind(st.st_mode)})",
        )
    return fd, st.st_size


def read_regular(path: str, limit: int) -> bytes:
    """The whole of a small regular file, refused when it is larger than ``limit`` bytes."""
    fd, size = open_regular(path)
    try:
        if size > limit:
            raise CheckpointError(path, f"{size} bytes, more than the {limit} bytes accepted for this file")
        chunks, got = [], 0
        while got <= limit:
            block = os.read(fd, min(1 << 20, limit + 1 - got))
            if not block:
                break
            chunks.append(block)
            got += len(block)
        if got > limit:
            raise CheckpointError(
                path, f"grew past the {limit} bytes accepted for this file while being read"
            )
        return b"".join(chunks)
    finally:
        os.close(fd)


# ------------------------------------------------------------------ JSON
_ESCAPE = re.compile(rb"\\\\.", re.DOTALL)
_STEP = np.zeros(256, np.int8)
_STEP[[ord("["), ord("{")]] = 1
_STEP[[ord("]"), ord("}")]] = -1
_BLOCK = 1 << 20


def json_depth(raw: bytes) -> int:
    """How deeply the arrays and objects of a JSON text nest (brackets inside strings not counted),
    in numpy passes over 1 MiB blocks: ~10 ms per MB."""
    if b"\\" in raw:  # escapes hide quotes: blank them first (rare in checkpoint headers)
        raw = _ESCAPE.sub(b"__", raw)
    text = np.frombuffer(raw, np.uint8)
    deepest = level = 0
    in_string = False
    for s in range(0, text.size, _BLOCK):
        block = text[s : s + _BLOCK]
        quotes = np.cumsum(block == ord('"'), dtype=np.int32)
        outside = (quotes & 1) == (1 if in_string else 0)  # an even count of quotes before: outside a string
        run = np.cumsum(np.where(outside, _STEP[block], 0), dtype=np.int64)
        deepest = max(deepest, level + int(run.max()))
        level += int(run[-1])
        in_string ^= bool(quotes[-1] & 1)
    return deepest


def load_json(raw: bytes, path: str, what: str, max_depth: int = MAX_JSON_DEPTH) -> Any:
    """``json.loads`` of a checkpoint's JSON, its nesting checked first; every failure a ``CheckpointError``."""
    depth = json_depth(raw)
    if depth > max_depth:
        raise CheckpointError(path, f"{what}: nested {depth} levels deep, more than the {max_depth} accepted")
    try:
        return json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise CheckpointError(path, f"{what}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except (ValueError, RecursionError) as exc:
        raise CheckpointError(path, f"{what}: not valid JSON ({exc})") from None


def read_json(path: str, what: str, limit: int = MAX_JSON_BYTES) -> Any:
    return load_json(read_regular(path, limit), path, what)


# ------------------------------------------------------------------ numbers
def is_int(v: Any) -> bool:
    """A JSON integer: ``True`` and ``2.0`` are not."""
    return type(v) is int


def shape_of(path: str, name: str, shape: Any) -> tuple[int, ...]:
    """A header's shape as a tuple of ints, refused unless it is a list of at most ``MAX_RANK``
    non-negative integers."""
    if not isinstance(shape, list):
        raise CheckpointError(
            path, f"tensor {name!r}: shape must be a list of integers, received {short(shape)}"
        )
    if len(shape) > MAX_RANK:
        raise CheckpointError(
            path, f"tensor {name!r}: shape has {len(shape)} dimensions, at most {MAX_RANK} accepted"
        )
    for s in shape:
        if not is_int(s) or s < 0:
            raise CheckpointError(
                path,
                f"tensor {name!r}: shape {short(shape)} holds {short(s)}, expected non-negative integers",
            )
    return tuple(shape)


def numel(shape: Sequence[int]) -> int:
    """The element count in Python integers: 2**62 x 4 is 2**64, not 0 as in int64."""
    return math.prod(int(s) for s in shape)


def short(v: Any, n: int = 60) -> str:
    text = repr(v)
    return text if len(text) <= n else text[: n - 3] + "..."


def human_bytes(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


# ------------------------------------------------------------------ zip
_EOCD = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_EOCD64 = b"PK\x06\x06"


def zip_members(f, size: int) -> int | None:
    """How many members a zip's end-of-central-directory record lists (ZIP64 too), read from the
    file's tail before ``zipfile`` builds an object for each; None when no record is found."""
    tail_len = min(size, 22 + 65535)
    f.seek(size - tail_len)
    tail = f.read(tail_len)
    at = tail.rfind(_EOCD)
    if at < 0 or at + 22 > len(tail):
        return None
    (count,) = struct.unpack("<H", tail[at + 10 : at + 12])
    if count != 0xFFFF or at < 20 or tail[at - 20 : at - 16] != _EOCD64_LOCATOR:
        return count
    (rec,) = struct.unpack("<Q", tail[at - 12 : at - 4])
    if rec + 56 > size:
        return None
    f.seek(rec)
    head = f.read(56)
    if len(head) < 56 or head[:4] != _EOCD64:
        return None
    return struct.unpack("<Q", head[32:40])[0]


def check_zip(path: str, f, size: int) -> None:
    """Refuse a zip listing more than ``MAX_ZIP_MEMBERS`` members, before ``zipfile`` reads the list."""
    n = zip_members(f, size)
    if n is not None and n > MAX_ZIP_MEMBERS:
        raise CheckpointError(
            path, f"the zip archive lists {n} members, more than the {MAX_ZIP_MEMBERS} accepted"
        )
    f.seek(0)


def check_inflation(path: str, info) -> None:
    """Refuse a compressed zip member (a ``zipfile.ZipInfo``) that inflates past reason: torch and
    Keras store their weights uncompressed, and weights deflate by a few percent, not 100x."""
    if (
        info.compress_type
        and info.file_size > MAX_SMALL_MEMBER
        and info.file_size > MAX_ZIP_RATIO * max(1, info.compress_size)
    ):
        raise CheckpointError(
            path,
            f"{info.filename} in the archive inflates {info.compress_size} bytes to "
            f"{info.file_size} ({info.file_size // max(1, info.compress_size)}x): a zip bomb? "
            "not extracted",
        )
