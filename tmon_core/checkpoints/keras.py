"""Keras weights: ``.weights.h5`` (Keras 3), ``.keras`` archives (a zip holding ``config.json`` and
``model.weights.h5``), legacy Keras 2 ``.h5`` models, and any other HDF5 file of arrays.

Read with h5py, a dataset slice at a time. Tensor names are the HDF5 paths Keras writes
(``layers/dense/vars/0``): stable between checkpoints of one model. The optimizer's variables are
optimizer state, not model weights: they are left out of the tensor diff, and its step counter
and learning rate (Keras 3 keeps them as its first two variables) go into the parameters. A
``.keras`` archive is read in place when its weights are stored uncompressed, as Keras writes
them; a compressed one is extracted to a temporary file first.
"""

from __future__ import annotations

import io
import math
import os
import shutil
import struct
import tempfile
import zipfile
import zlib

import numpy as np

from . import guard
from .base import Checkpoint, TensorInfo, flatten, plain
from .errors import CheckpointError

#: Keras config entries that differ between saves of the same model (object ids), not settings
VOLATILE_KEYS = frozenset({"shared_object_id"})
#: an HDF5 dataset may claim this many times the bytes the file stores for it (compression) before
#: the excess counts; at most MAX_H5_UNSTORED of excess in one file (fill values HDF5 would make up)
MAX_H5_RATIO = 100
MAX_H5_UNSTORED = 256 * 1024 * 1024
MAX_H5_CHUNK = 256 * 1024 * 1024  # reading any element decompresses its whole chunk
#: most bytes accepted for a .keras archive's config.json / metadata.json
MAX_ARCHIVE_JSON = 64 * 1024 * 1024


def _import_h5py(path: str):
    try:
        import h5py
    except ImportError:
        raise CheckpointError(path, "reading HDF5 / Keras weights needs h5py: pip install h5py") from None
    return h5py


class H5Checkpoint(Checkpoint):
    format = "h5"

    def __init__(self, path: str, source=None, fmt: str = "h5", cleanup: str | None = None):
        super().__init__(path)
        self.format = fmt
        self._cleanup = cleanup
        self._source = source
        self._row_cache: tuple | None = None
        h5py = _import_h5py(path)
        if source is None:
            guard.entry(path, dir_ok=False)  # h5py opens it by name: no FIFO or device past this point
        self._unstored = 0
        try:
            self._f = h5py.File(source if source is not None else path, "r")
        except OSError as exc:
            self._close_source()
            raise CheckpointError(path, f"truncated or corrupt HDF5 file ({exc})") from None
        try:
            self._scan(h5py)
        except CheckpointError:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise CheckpointError(path, f"corrupt HDF5 file ({type(exc).__name__}: {exc})") from None

    def _scan(self, h5py) -> None:
        f = self._f
        root = f

        def hard(name):  # a link in the file itself: an external one would open another file, maybe a FIFO
            return isinstance(f.get(name, getlink=True), h5py.HardLink)

        if hard("model_weights") and isinstance(
            f["model_weights"], h5py.Group
        ):  # a Keras 2 model saved whole
            root = f["model_weights"]
            self.format = "keras-h5"
            for attr in ("model_config", "training_config"):
                if attr in f.attrs:
                    try:
                        text = _text(f.attrs[attr]).encode("utf-8")
                        flatten(
                            attr.split("_")[0],
                            guard.load_json(text, self.path, attr),
                            self.params,
                            VOLATILE_KEYS,
                            budget=self.budget,
                        )
                    except (ValueError, TypeError):
                        pass
            if "keras_version" in f.attrs:
                self.params["keras_version"] = _text(f.attrs["keras_version"])
        elif hard("layers") or hard("optimizer"):
            self.format = self.format if self.format != "h5" else "keras-weights"
        self._datasets: dict[str, object] = {}

        def visit(name, obj):
            if not isinstance(obj, h5py.Dataset):
                return
            self._check_dataset(name, obj)
            if name.startswith("optimizer/"):
                self._optimizer_var(name, obj)
                return
            self._datasets[name] = obj
            self.tensors[name] = TensorInfo(tuple(int(s) for s in obj.shape), _dtype_name(obj.dtype))
            if obj.dtype.kind not in "biufc":
                self.unreadable[name] = f"not numeric ({obj.dtype})"

        root.visititems(visit)
        if not self.tensors:
            raise CheckpointError(self.path, "the HDF5 file holds no weight arrays")

    def _check_dataset(self, name: str, ds) -> None:
        """Refuse what reading this dataset would turn into: other files (virtual, external
        storage), or a vast array the file does not hold (unallocated: HDF5 serves its fill value)."""
        if ds.is_virtual:
            raise CheckpointError(
                self.path,
                f"dataset {name!r} is a virtual dataset (its data is mapped from other files): not read",
            )
        if ds.external:
            raise CheckpointError(
                self.path,
                f"dataset {name!r} keeps its data in external files ({ds.external[0][0]!r}...): not read",
            )
        nbytes = guard.numel(ds.shape or ()) * ds.dtype.itemsize
        stored = ds.id.get_storage_size()
        self._unstored += max(0, nbytes - MAX_H5_RATIO * stored)
        if self._unstored > MAX_H5_UNSTORED:
            raise CheckpointError(
                self.path,
                f"dataset {name!r} is {ds.dtype}{list(ds.shape)} "
                f"({guard.human_bytes(nbytes)}) but the file stores {stored} bytes of it "
                "(unallocated, or compressed beyond reason): not read",
            )
        if ds.chunks and guard.numel(ds.chunks) * ds.dtype.itemsize > MAX_H5_CHUNK:
            raise CheckpointError(
                self.path,
                f"dataset {name!r} has chunks of {list(ds.chunks)} elements, over "
                f"{guard.human_bytes(MAX_H5_CHUNK)} each: not read",
            )

    def _optimizer_var(self, name: str, ds) -> None:
        if ds.shape != ():
            return
        if "name" in ds.parent.attrs:
            self.params["optimizer.name"] = _text(ds.parent.attrs["name"])
        index = name.rsplit("/", 1)[-1]
        value = plain(ds[()])
        if index == "0" and isinstance(value, int):
            self.step = value  # the optimizer's step counter: the checkpoint's position, not a parameter
        elif index == "1" and isinstance(value, float):
            self.params["optimizer.learning_rate"] = value
        else:
            self.params[f"optimizer.vars.{index}"] = value

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        ds = self._datasets[name]
        if ds.ndim == 0:
            return np.asarray(ds[()]).reshape(1)[start:stop]
        row = math.prod(ds.shape[1:])
        if row == 0:
            return np.empty(0, dtype=ds.dtype)
        r0, r1 = start // row, -(-stop // row)
        try:
            if r1 - r0 == 1 and row > stop - start:
                # a slice of one long row: read the row once and serve the slices from it
                if self._row_cache is None or self._row_cache[:2] != (name, r0):
                    self._row_cache = (name, r0, np.asarray(ds[r0]).reshape(-1))
                data, base = self._row_cache[2], r0 * row
            else:
                data, base = np.asarray(ds[r0:r1]).reshape(-1), r0 * row
        except OSError as exc:
            raise CheckpointError(self.path, f"cannot read dataset {name!r} ({exc})") from None
        return data[start - base : stop - base]

    def _close_source(self) -> None:
        if self._source is not None and hasattr(self._source, "close"):
            self._source.close()
        self._source = None
        if self._cleanup:
            try:
                os.unlink(self._cleanup)
            except OSError:
                pass
            self._cleanup = None

    def close(self) -> None:
        f, self._f = getattr(self, "_f", None), None
        self._datasets = {}
        self._row_cache = None
        if f is not None:
            try:
                f.close()
            except Exception:
                pass
        self._close_source()


def _text(v) -> str:
    return v.decode("utf-8") if isinstance(v, bytes) else str(v)


def _dtype_name(dt) -> str:
    return "bool" if dt.kind == "b" else str(dt) if dt.kind in "biufc" else f"other({dt})"


def open_h5(path: str) -> H5Checkpoint:
    return H5Checkpoint(path)


# ------------------------------------------------------------------ .keras archives
class _Window(io.RawIOBase):
    """Bytes ``[offset, offset + size)`` of a file, as a seekable file of their own (for h5py)."""

    def __init__(self, f, offset: int, size: int):
        self._f = f
        self._offset, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, b) -> int:
        n = max(0, min(len(b), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._offset + self._pos)
        got = self._f.readinto(memoryview(b)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        self._f.close()
        super().close()


def open_keras_archive(path: str) -> H5Checkpoint:
    _import_h5py(path)
    fd, size = guard.open_regular(path)
    with os.fdopen(fd, "rb") as raw:
        guard.check_zip(path, raw, size)
        try:
            z = zipfile.ZipFile(raw)
        except zipfile.BadZipFile:
            raise CheckpointError(
                path, "truncated or corrupt: not a readable zip archive (a .keras file is one)"
            ) from None
        with z:
            config, meta, info, source, tmp = _archive_members(path, z, raw, size)
    ck = H5Checkpoint(path, source=source if tmp is None else tmp, fmt="keras", cleanup=tmp)
    if tmp is not None:
        ck.notes.append(
            "model.weights.h5 is compressed in the archive: extracted to a temporary file to read it"
        )
    _keras_config_params(config, ck.params, ck.budget)
    if isinstance(meta, dict) and isinstance(meta.get("keras_version"), str):
        ck.params["keras_version"] = meta["keras_version"]
    return ck


def _archive_members(path: str, z: zipfile.ZipFile, raw, size: int):
    """config.json, metadata.json and where to read model.weights.h5 from, each member's declared
    sizes checked before it is read (a zip bomb declares them too, or is caught by zipfile's own
    stop at the declared size)."""
    names = z.namelist()
    weights = (
        "model.weights.h5"
        if "model.weights.h5" in names
        else next((n for n in names if n.endswith(".weights.h5")), None)
    )
    if weights is None:
        raise CheckpointError(
            path, f"a .keras archive without model.weights.h5 (it holds: {', '.join(names[:10])})"
        )
    docs = []
    for name in ("config.json", "metadata.json"):
        if name not in names:
            docs.append({})
            continue
        member = z.getinfo(name)
        if member.file_size > MAX_ARCHIVE_JSON:
            raise CheckpointError(
                path,
                f"{name} in the archive declares {member.file_size} bytes, more than the "
                f"{MAX_ARCHIVE_JSON} accepted",
            )
        try:
            docs.append(guard.load_json(z.read(name), path, f"{name} in the archive"))
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            raise CheckpointError(path, f"corrupt .keras archive: {name} unreadable ({exc})") from None
    info = z.getinfo(weights)
    tmp = None
    if info.compress_type == zipfile.ZIP_STORED:
        if info.file_size != info.compress_size:
            raise CheckpointError(
                path,
                f"corrupt .keras archive: {weights} is stored uncompressed but declares "
                f"{info.file_size} bytes and {info.compress_size} compressed",
            )
        raw.seek(info.header_offset)
        local = raw.read(30)
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            raise CheckpointError(path, "corrupt .keras archive: bad local header for model.weights.h5")
        name_len, extra_len = struct.unpack("<HH", local[26:30])
        offset = info.header_offset + 30 + name_len + extra_len
        if offset + info.file_size > size:
            raise CheckpointError(
                path, "truncated .keras archive: model.weights.h5 runs past the end of the file"
            )
        # a descriptor of its own on the file checked and opened above, not the path again (it could be swapped)
        mine = os.fdopen(os.dup(raw.fileno()), "rb")
        source = io.BufferedReader(_Window(mine, offset, info.file_size), buffer_size=1 << 20)
    else:  # compressed: h5py needs to seek, so decompress once into a temporary file
        _check_inflation(path, weights, info)
        fd, tmp = tempfile.mkstemp(suffix=".weights.h5", prefix="tmon-diff-")
        try:
            with os.fdopen(fd, "wb") as out, z.open(info) as src:
                while block := src.read(1 << 24):
                    out.write(block)
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as exc:
            os.unlink(tmp)
            raise CheckpointError(
                path, f"corrupt .keras archive: cannot extract model.weights.h5 ({exc})"
            ) from None
        source = None
    return docs[0], docs[1], info, source, tmp


def _check_inflation(path: str, name: str, info: zipfile.ZipInfo) -> None:
    """Refuse a compressed member that would inflate past reason or past the free disk space."""
    guard.check_inflation(path, info)
    free = shutil.disk_usage(tempfile.gettempdir()).free
    if info.file_size > free:
        raise CheckpointError(
            path,
            f"{name} in the archive needs {guard.human_bytes(info.file_size)} to extract, "
            f"{tempfile.gettempdir()} has {guard.human_bytes(free)} free",
        )


def _keras_config_params(config: dict, out: dict, budget=None) -> None:
    """Flatten a Keras ``config.json``: layers by their names, the compile settings, the optimizer."""
    if not isinstance(config, dict):
        return
    if config.get("class_name"):
        out["model.class"] = config["class_name"]
    model = config.get("config") if isinstance(config.get("config"), dict) else {}
    for k, v in model.items():
        if k == "layers" and isinstance(v, list):
            for layer in v:
                if not isinstance(layer, dict):
                    continue
                lc = layer.get("config") if isinstance(layer.get("config"), dict) else {}
                name = lc.get("name") or layer.get("name") or "?"
                out[f"layers.{name}.class"] = plain(layer.get("class_name"), budget)
                flatten(
                    f"layers.{name}",
                    {kk: vv for kk, vv in lc.items() if kk != "name"},
                    out,
                    VOLATILE_KEYS,
                    budget,
                )
        else:
            flatten(f"model.{k}", v, out, VOLATILE_KEYS, budget)
    compile_config = config.get("compile_config")
    if isinstance(compile_config, dict):
        opt = compile_config.get("optimizer")
        if isinstance(opt, dict) and isinstance(opt.get("config"), dict):
            out["compile.optimizer.class"] = opt.get("class_name")
            flatten("compile.optimizer", opt["config"], out, VOLATILE_KEYS, budget)
        elif opt is not None:
            out["compile.optimizer"] = plain(opt, budget)
        flatten(
            "compile",
            {k: v for k, v in compile_config.items() if k != "optimizer"},
            out,
            VOLATILE_KEYS,
            budget,
        )
