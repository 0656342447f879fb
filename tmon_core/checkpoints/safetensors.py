"""safetensors files (one, or the shards of a sharded checkpoint), read a slice at a time.

The format is an 8-byte little-endian header length, a JSON header (name -> dtype, shape, byte
range) and the raw tensor bytes. The header is parsed and checked here against the file size, so
a truncated or damaged file is refused before any comparison starts, naming what is wrong. Slices
are read with ``pread`` into fresh buffers rather than through a memory map: peak memory is one
slice per side, whatever the tensor's size, and bfloat16/float8 need no torch to widen.
"""

from __future__ import annotations

import os
import struct

import numpy as np

from .base import Checkpoint, TensorInfo
from .errors import CheckpointError
from .guard import human_bytes, is_int, load_json, numel, open_regular, shape_of, short

MAX_HEADER = 100 * 1024 * 1024  # the reference implementation's own limit
MAX_DEPTH = 8  # a header is name -> {dtype, shape: [...], data_offsets: [...]}: 3 levels deep

#: safetensors dtype -> (our name, numpy type the bytes are read as)
DTYPES = {
    "F64": ("float64", np.float64),
    "F32": ("float32", np.float32),
    "F16": ("float16", np.float16),
    "BF16": ("bfloat16", np.uint16),
    "F8_E4M3": ("float8_e4m3fn", np.uint8),
    "F8_E5M2": ("float8_e5m2", np.uint8),
    "I64": ("int64", np.int64),
    "I32": ("int32", np.int32),
    "I16": ("int16", np.int16),
    "I8": ("int8", np.int8),
    "U64": ("uint64", np.uint64),
    "U32": ("uint32", np.uint32),
    "U16": ("uint16", np.uint16),
    "U8": ("uint8", np.uint8),
    "BOOL": ("bool", np.bool_),
    "C64": ("complex64", np.complex64),
}


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 is the top half of a float32: shift the bits into place."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def _e4m3_table() -> np.ndarray:
    """float32 value of every float8_e4m3fn byte (bias 7, no infinities, S.1111.111 is NaN)."""
    b = np.arange(256)
    sign = np.where(b & 0x80, -1.0, 1.0)
    exp, man = (b >> 3) & 0xF, b & 0x7
    val = np.where(exp == 0, man / 8 * 2.0**-6, (1 + man / 8) * 2.0 ** (exp - 7.0))
    val = sign * val
    val[(b & 0x7F) == 0x7F] = np.nan
    return val.astype(np.float32)


def _e5m2_table() -> np.ndarray:
    """float8_e5m2 is the top byte of a float16."""
    return (np.arange(256, dtype=np.uint16) << 8).view(np.float16).astype(np.float32)


_F8 = {}


def widen(code: str, raw: np.ndarray) -> np.ndarray:
    if code == "BF16":
        return bf16_to_f32(raw)
    if code in ("F8_E4M3", "F8_E5M2"):
        if code not in _F8:
            _F8[code] = _e4m3_table() if code == "F8_E4M3" else _e5m2_table()
        return _F8[code][raw]
    if code == "C64":
        return raw.view(np.float32)
    return raw


class _File:
    """One safetensors file: its checked header and an open descriptor."""

    def __init__(self, path: str):
        self.path = path
        self.fd, self.size = open_regular(path)
        try:
            self._parse()
        except BaseException:
            os.close(self.fd)
            raise

    def _parse(self) -> None:
        path, size = self.path, self.size
        if size < 8:
            raise CheckpointError(
                path, f"truncated: {size} bytes, a safetensors file starts with an 8-byte header length"
            )
        (n,) = struct.unpack("<Q", os.pread(self.fd, 8, 0))
        if n > MAX_HEADER:
            raise CheckpointError(
                path,
                f"corrupt safetensors header: it claims {n} bytes of header, more than the "
                f"{MAX_HEADER} accepted (not a safetensors file?)",
            )
        if 8 + n > size:
            raise CheckpointError(path, f"truncated: the header needs {8 + n} bytes, the file has {size}")
        header = load_json(os.pread(self.fd, n, 8), path, "corrupt safetensors header", MAX_DEPTH)
        if not isinstance(header, dict):
            raise CheckpointError(path, "corrupt safetensors header: not a JSON object")
        self.data_start = 8 + n
        available = size - self.data_start
        meta = header.pop("__metadata__", None) or {}
        # the format's metadata is text to text; anything else is not kept (it could nest or be huge)
        self.metadata = (
            {k: v for k, v in meta.items() if isinstance(v, str)} if isinstance(meta, dict) else {}
        )
        self.entries: dict[str, tuple[str, tuple[int, ...], int]] = {}  # name -> code, shape, absolute offset
        for name, e in sorted(header.items(), key=lambda kv: _begin(kv[1])):
            self.entries[name] = self._entry(name, e, available)

    def _entry(self, name: str, e, available: int) -> tuple[str, tuple[int, ...], int]:
        """One header entry, every field checked against the format and the file's size."""
        path = self.path
        if not isinstance(e, dict) or not {"dtype", "shape", "data_offsets"} <= e.keys():
            raise CheckpointError(
                path,
                f"corrupt safetensors header: entry {name!r} is not an object with dtype, "
                f"shape and data_offsets ({short(e)})",
            )
        code = e["dtype"]
        if code not in DTYPES:
            raise CheckpointError(
                path,
                f"tensor {name!r} has dtype {short(code)}, which tmon cannot compare "
                f"(expected one of {', '.join(DTYPES)})",
            )
        shape = shape_of(path, name, e["shape"])
        offsets = e["data_offsets"]
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(is_int(o) for o in offsets)):
            raise CheckpointError(
                path,
                f"tensor {name!r}: data_offsets must be two integers [begin, end], received {short(offsets)}",
            )
        begin, end = offsets
        if not 0 <= begin <= end:
            raise CheckpointError(
                path,
                f"corrupt safetensors header: tensor {name!r} has data_offsets {offsets}: "
                "expected 0 <= begin <= end",
            )
        if end > available:
            raise CheckpointError(
                path,
                f"truncated: tensor {name!r} ends at byte {self.data_start + end}, the file "
                f"has {self.size} bytes (data_offsets {offsets} outside the data)",
            )
        nbytes = numel(shape) * np.dtype(DTYPES[code][1]).itemsize  # Python ints: no overflow to 0
        if end - begin != nbytes:
            raise CheckpointError(
                path,
                f"corrupt safetensors header: {name!r} is {code}{list(shape)} "
                f"({human_bytes(nbytes)}) but spans bytes {begin}..{end}",
            )
        return code, shape, self.data_start + begin

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        code, _, offset = self.entries[name]
        raw = np.empty(stop - start, dtype=DTYPES[code][1])
        if raw.nbytes:
            view = memoryview(raw).cast("B")
            pos, want = offset + start * raw.itemsize, raw.nbytes
            got = 0
            while got < want:  # pread may return less than asked for
                try:
                    n = (
                        os.preadv(self.fd, [view[got:]], pos + got)
                        if hasattr(os, "preadv")
                        else _pread_into(self.fd, view[got:], pos + got)
                    )
                except OSError as exc:
                    raise CheckpointError(self.path, f"cannot read {name!r}: {exc.strerror or exc}") from None
                if n == 0:
                    raise CheckpointError(self.path, f"truncated while reading {name!r} (the file shrank?)")
                got += n
        return widen(code, raw)

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None


def _pread_into(fd: int, view: memoryview, pos: int) -> int:
    data = os.pread(fd, len(view), pos)
    view[: len(data)] = data
    return len(data)


def _begin(e) -> int:
    try:
        begin = e["data_offsets"][0]
    except (KeyError, TypeError, IndexError):
        return -1
    return begin if is_int(begin) else -1


class SafetensorsCheckpoint(Checkpoint):
    """One safetensors file or the shards of one checkpoint, as a single name space."""

    format = "safetensors"

    def __init__(self, paths: list[str], path: str | None = None):
        super().__init__(path or paths[0])
        self._files: list[_File] = []
        self._where: dict[str, _File] = {}
        try:
            for p in paths:
                f = _File(p)
                self._files.append(f)
                for name, (code, shape, _) in f.entries.items():
                    if name in self._where:
                        raise CheckpointError(p, f"tensor {name!r} is also in {self._where[name].path}")
                    self._where[name] = f
                    self.tensors[name] = TensorInfo(shape, DTYPES[code][0])
                for k, v in f.metadata.items():
                    self.params.setdefault(f"metadata.{k}", v)
        except BaseException:
            self.close()
            raise

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        return self._where[name].read(name, start, stop)

    def close(self) -> None:
        for f in self._files:
            f.close()
