"""TensorBoard event files <-> tmon runs (scalars with their steps and wall times; no TensorFlow).

Import: every directory holding ``*tfevents*`` files is one run (``lightning_logs/version_3``,
a ``SummaryWriter``'s log dir); its event files are read in name order, as TensorBoard does.
Scalars written either way are read: ``simple_value`` (``torch.utils.tensorboard``, Lightning's
``TensorBoardLogger``, TF1) and scalar tensors of the ``scalars`` plugin (``tf.summary.scalar``,
and tmon's own export). A Lightning ``hparams.yaml`` beside the files becomes the run's
``hparams``; checkpoints beside the log are recorded with the run.

Records are framed here, not by the ``tensorboard`` package's record reader: that one checks
each record's CRC in pure Python (about 130k records/s), alone most of an import's time. Scalars
laid out as torch/Lightning/TF1 write them are decoded from their bytes with numpy, each tag's
layout checked once with the package's own protobuf class (``_decode``); every other record is
parsed with that class. A truncated last record (a log still being written) ends the file, as in
TensorBoard. CRCs are not checked: a record too damaged to parse stops the import with the
parser's error, but a flipped bit inside a value is read as it is.

Export: one event file with every key of a run as a float64 scalar tensor of the ``scalars``
plugin (TensorBoard's ``simple_value`` is float32 and would round the values), with each
point's step and wall time, so a round trip is exact, NaN and ±inf included.
"""

from __future__ import annotations

import glob
import math
import os
import struct
import time

from ._common import Imported, RunWriter, file_digest, find_imported

FRAMEWORK = "tensorboard"


def _event_pb2():
    try:
        from tensorboard.compat.proto import event_pb2
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError(
            "reading or writing TensorBoard files needs the tensorboard package: "
            "pip install 'tmon[interop]' (or pip install tensorboard)"
        ) from exc
    return event_pb2


def find_runs(path: str | os.PathLike) -> list[str]:
    """The directories under ``path`` (itself included) that hold event files, sorted; a path that
    is an event file is its own directory's run."""
    path = os.fspath(path)
    if os.path.isfile(path):
        return [os.path.dirname(os.path.abspath(path))]
    if not os.path.isdir(path):
        raise FileNotFoundError(f"no TensorBoard log at {path!r}")
    out = []
    for d, _, files in os.walk(path):
        if any("tfevents" in f for f in files):
            out.append(d)
    return sorted(out)


def event_files(run_dir: str) -> list[str]:
    return sorted(f for f in glob.glob(os.path.join(glob.escape(run_dir), "*tfevents*")) if os.path.isfile(f))


_NOT_SIMPLE = object()


def _simple_layout(event_pb2, body: bytes):
    """The tag when ``body`` (an event's bytes after its wall time and step) is a summary of one
    ``simple_value`` whose 4 bytes end the record, as torch's ``SummaryWriter``, Lightning and TF1
    write scalars; else ``_NOT_SIMPLE``. Decided by parsing with TensorBoard's protobuf class, with
    two different float payloads, so the fast path reads exactly what the parser would."""
    try:
        wall = b"\x09" + struct.pack("<d", 1.0)  # not 0.0: a default value is not listed by ListFields
        e0 = event_pb2.Event.FromString(wall + body + b"\x00\x00\x00\x00")
        e1 = event_pb2.Event.FromString(wall + body + b"\x00\x00\x80\x3f")
    except Exception:
        return _NOT_SIMPLE
    vals = e1.summary.value
    if (
        len(vals) != 1
        or vals[0].WhichOneof("value") != "simple_value"
        or vals[0].simple_value != 1.0
        or e0.summary.value[0].simple_value != 0.0
        or e1.step != 0
        or vals[0].HasField("metadata")
        or e1.ListFields()[-1][0].name != "summary"
        or len(e1.ListFields()) != 2
    ):
        return _NOT_SIMPLE
    return vals[0].tag


def _decode(data: bytes, event_pb2):
    """Where ``data``'s records and their scalars are, decoded with numpy, all records at once.

    Returns (starts, ends, simple, tags, steps, walls, values, stats): per record its payload's
    bounds, whether it is laid out as torch/Lightning/TF1 write a scalar (wall time, step, then a
    summary of one ``simple_value`` ending the record), and for those the tag, step, wall time
    and value; ``stats`` (points, tags, first and last wall time, largest step) of those records,
    or None.
    The part between step and value is the same for every point of a tag: each distinct one is
    checked once by ``_simple_layout`` with TensorBoard's parser, so what is read here is what
    the parser would read. Other records the caller parses whole."""
    import numpy as np

    starts: list[int] = []
    ends: list[int] = []
    add_start, add_end, unpack, size, pos = starts.append, ends.append, struct.unpack_from, len(data), 0
    while pos + 12 <= size:  # _frames, written out: it runs once per record
        (length,) = unpack("<Q", data, pos)
        end = pos + 12 + length
        if end + 4 > size:
            break
        add_start(pos + 12)
        add_end(end)
        pos = end + 4
    n = len(starts)
    if not n:
        return [], [], [], [], [], [], [], None
    a, b = np.array(starts, dtype=np.int64), np.array(ends, dtype=np.int64)
    buf = np.frombuffer(data, np.uint8)
    top = len(buf) - 1

    def at(offsets):  # bytes at offsets, clipped: a short record reads garbage, then fails the checks
        return buf[np.minimum(offsets, top)]

    def gather(offsets, width):
        out = np.empty((len(offsets), width), np.uint8)
        for j in range(width):
            out[:, j] = at(offsets + j)
        return out

    ok = (b - a > 16) & (at(a) == 0x09)  # field 1 (wall_time, fixed64) first
    has_step = ok & (at(a + 9) == 0x10)  # field 2 (step, varint); absent when 0
    steps = np.zeros(n, np.uint64)
    length = np.zeros(n, np.int64)
    alive = has_step.copy()
    for k in range(10):
        byte = at(a + 10 + k)
        steps |= np.where(alive, (byte & 0x7F).astype(np.uint64) << np.uint64(7 * k), np.uint64(0))
        length += alive
        alive &= byte >= 128
        if not alive.any():
            break
    ok &= ~alive  # a varint longer than 10 bytes is not a step
    body = a + 9 + np.where(has_step, 1 + length, 0)
    blen = b - 4 - body
    ok &= blen > 0
    tag_of = np.full(n, -1, np.int64)
    names: list[str] = []
    for size in np.unique(blen[ok]).tolist():
        sel = np.flatnonzero(ok & (blen == size))
        bodies = np.ascontiguousarray(gather(body[sel], size)).view(f"V{size}").ravel()
        uniq, inverse = np.unique(bodies, return_inverse=True)
        index = []
        for u in uniq:
            tag = _simple_layout(event_pb2, u.tobytes())
            if tag is _NOT_SIMPLE:
                index.append(-1)
            else:
                names.append(tag)
                index.append(len(names) - 1)
        tag_of[sel] = np.asarray(index, np.int64)[inverse.ravel()]
    simple = tag_of >= 0
    walls = np.ascontiguousarray(gather(a + 1, 8)).view("<f8").ravel()
    values = np.ascontiguousarray(gather(b - 4, 4)).view("<f4").ravel().astype(np.float64)
    steps = steps.view(np.int64)  # int64, as the parser reads it
    tags = np.array(names + [None], dtype=object)[tag_of]
    stats = None
    if simple.any():
        w = walls[simple]
        stats = (int(simple.sum()), set(names), float(w.min()), float(w.max()), int(steps[simple].max()))
    return (
        starts,
        ends,
        simple.tolist(),
        tags.tolist(),
        steps.tolist(),
        walls.tolist(),
        values.tolist(),
        stats,
    )


def scan(run_dir: str, log) -> tuple[int, set, float, float, int]:
    """Hands every scalar of ``run_dir``'s event files, in file order, to ``log({tag: value}, step,
    wall_time=wall)`` (``Recorder.log``'s signature); returns (points, tags, first wall time, last
    wall time, largest step). Scalars as torch/Lightning/TF1 write them are decoded all at once
    (``_decode``); any other record is parsed with TensorBoard's ``event_pb2.Event``."""
    event_pb2 = _event_pb2()
    parse = event_pb2.Event.FromString
    tensor_tags: set[str] = set()  # tags whose first point said plugin "scalars" (later points omit it)
    make_ndarray = None
    n, tags, first, last, max_step = 0, set(), math.inf, -math.inf, -1
    for path in event_files(run_dir):
        with open(path, "rb") as f:
            data = f.read()
        starts, ends, simple, rec_tags, rec_steps, rec_walls, rec_values, stats = _decode(data, event_pb2)
        if stats is not None:
            n += stats[0]
            tags |= stats[1]
            first, last, max_step = min(first, stats[2]), max(last, stats[3]), max(max_step, stats[4])
        for i, fast, tag, step, wall, x in zip(
            range(len(simple)), simple, rec_tags, rec_steps, rec_walls, rec_values
        ):
            if fast:
                log({tag: x}, step, wall_time=wall)
                continue
            e = parse(data[starts[i] : ends[i]])
            values = e.summary.value  # empty when the event holds no summary
            if not values:
                continue
            step, wall = e.step, e.wall_time
            for v in values:
                kind = v.WhichOneof("value")
                if kind == "simple_value":
                    x = v.simple_value
                elif kind == "tensor":
                    if v.metadata.plugin_data.plugin_name == "scalars":
                        tensor_tags.add(v.tag)
                    if v.tag not in tensor_tags:
                        continue
                    if make_ndarray is None:
                        from tensorboard.util.tensor_util import make_ndarray
                    arr = make_ndarray(v.tensor)
                    if arr.size != 1:
                        continue
                    x = float(arr.reshape(()).item())
                else:
                    continue
                tag = v.tag
                log({tag: x}, step, wall_time=wall)
                n += 1
                tags.add(tag)
                if wall < first:
                    first = wall
                if wall > last:
                    last = wall
                if step > max_step:
                    max_step = step
    return n, tags, first, last, max_step


def read_scalars(run_dir: str) -> dict[str, tuple[list, list, list]]:
    """Every scalar of ``run_dir``: tag -> (steps, wall times, values), in file order."""
    out: dict[str, tuple[list, list, list]] = {}

    def log(values, step, wall_time):
        ((tag, x),) = values.items()
        s, w, v = out.setdefault(tag, ([], [], []))
        s.append(step)
        w.append(wall_time)
        v.append(x)

    scan(run_dir, log)
    return out


def _hparams(run_dir: str) -> dict | None:
    path = os.path.join(run_dir, "hparams.yaml")
    if not os.path.isfile(path):
        return None
    try:
        import yaml

        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except Exception as exc:  # a yaml Lightning wrote with python objects: keep its text
        with open(path, encoding="utf-8", errors="replace") as f:
            return {"hparams.yaml": f.read(), "error": str(exc)[:200]}
    return data if isinstance(data, dict) else {"hparams.yaml": data}


def import_tensorboard(path: str | os.PathLike, store=None, *, name: str | None = None) -> list[Imported]:
    """Import every TensorBoard run under ``path`` into ``store``: one tmon run per directory of
    event files. A run imported before (same event file contents) is not written again."""
    from ._common import clean_hparams

    root = os.path.abspath(os.fspath(path))
    out = []
    for run_dir in find_runs(root):
        files = event_files(run_dir)
        fp = file_digest(files)
        source = run_dir
        existing = find_imported(store, fp)
        if existing is not None:
            out.append(Imported(existing, source, False))
            continue
        rel = os.path.relpath(run_dir, os.path.dirname(root)) if run_dir != root else os.path.basename(root)
        w = RunWriter(
            store,
            name=name or rel,
            framework=FRAMEWORK,
            fp=fp,
            source=source,
            fmt="tensorboard",
            hparams=clean_hparams(_hparams(run_dir)),
            extra={"files": [os.path.basename(f) for f in files]},
        )
        n, keys, first, last, max_step = scan(run_dir, w.log)
        w.checkpoints(run_dir)
        w.points, w.keys = n, keys
        w.close(
            first_wall=first if n else None, last_wall=last if n else None, last_step=max_step if n else None
        )
        out.append(w.result(source))
    return out


def export_tensorboard(run, out_dir: str | os.PathLike, keys: list[str] | None = None) -> str:
    """Write run ``run`` (a ``tmon_core.Run``) as one TensorBoard event file in ``out_dir``; returns
    its path. Every point keeps its step, wall time and float64 value."""
    import numpy as np
    from tensorboard.compat.proto import summary_pb2, tensor_pb2, tensor_shape_pb2, types_pb2
    from tensorboard.summary.writer.event_file_writer import EventFileWriter

    event_pb2 = _event_pb2()
    os.makedirs(out_dir, exist_ok=True)
    pattern = os.path.join(glob.escape(os.fspath(out_dir)), "*tfevents*.tmon")
    before = set(glob.glob(pattern))
    writer = EventFileWriter(
        os.fspath(out_dir), max_queue_size=1024, flush_secs=3600, filename_suffix=".tmon"
    )
    info = run.info()
    writer.add_event(
        event_pb2.Event(wall_time=info["created_at"] or time.time(), file_version="brain.Event:2")
    )
    meta = summary_pb2.SummaryMetadata(
        plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name="scalars"),
        data_class=summary_pb2.DATA_CLASS_SCALAR,
    )
    shape = tensor_shape_pb2.TensorShapeProto()
    for key in keys if keys is not None else run.metric_keys():
        df = run.metrics(key)
        steps = df["step"].to_numpy(np.int64)
        walls = df["wall_time"].to_numpy(np.float64)
        vals = df["value"].to_numpy(np.float64)
        for i in range(len(steps)):
            tensor = tensor_pb2.TensorProto(
                dtype=types_pb2.DT_DOUBLE,
                tensor_shape=shape,
                tensor_content=vals[i : i + 1].astype("<f8").tobytes(),
            )
            value = summary_pb2.Summary.Value(tag=key, tensor=tensor)
            if i == 0:
                value.metadata.CopyFrom(meta)  # as TensorBoard writes: the plugin on a tag's first point
            writer.add_event(
                event_pb2.Event(
                    wall_time=float(walls[i]), step=int(steps[i]), summary=summary_pb2.Summary(value=[value])
                )
            )
    writer.close()
    (path,) = set(glob.glob(pattern)) - before
    return path
