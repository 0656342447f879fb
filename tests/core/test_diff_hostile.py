"""Hostile checkpoints: headers that lie about shapes, sizes and offsets, JSON nested 200,000 deep,
HDF5 datasets that were never written or live in other files, zip bombs, FIFOs and devices,
pickles that share one dict a billion ways. Each is diffed in a child process held to 4 GiB of
address space and a time bound (a safety net, not a speed claim: without the checks these
allocate terabytes, build 2**44 slices or block for ever), and must end in a ``CheckpointError``
whose one line names the file and the field. The CLI says it in one line on stderr, exit 2.

Also: a recorded checkpoint whose path was written again is refused, not labelled with the new file.
"""

import json
import os
import socket
import struct
import subprocess
import sys
import zipfile

import numpy as np
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# bytes: imported torch, pandas and h5py, and the read thread's malloc arena, reserve ~2 GiB of
# address space they never touch; a hostile file asks for terabytes, so 4 GiB still catches it
ADDRESS_SPACE = 4 << 30
SECONDS_PER_CASE = 20  # generous on a shared 2-core machine; a case that hangs never reports at all

# Runs each (a, b) pair and prints one JSON line per pair, flushed, so a hang shows which case hung.
CHILD = r"""
import json, resource, sys, time
resource.setrlimit(resource.RLIMIT_AS, (int(sys.argv[2]), int(sys.argv[2])))
from tmon_core.diff import CheckpointError, diff
import pandas, h5py, torch  # imported up front: the time bound is for the diff, not for imports
for name, a, b in json.loads(sys.argv[1]):
    t0 = time.perf_counter()
    try:
        d = diff(a, b)
        res = {"ok": True, "notes": d.notes, "params": {k: str(v)[:200] for k, v in d.params_all.set_index("key").a.items()}}
    except CheckpointError as exc:
        res = {"error": "CheckpointError", "message": str(exc), "path": exc.path}
    except BaseException as exc:
        res = {"error": type(exc).__name__, "message": str(exc)[:500]}
    res["case"], res["seconds"] = name, time.perf_counter() - t0
    print(json.dumps(res), flush=True)
"""


def run_cases(cases: list[tuple[str, str, str]]) -> dict[str, dict]:
    """Diff each (name, a, b) in one bounded child process; name -> what happened."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, json.dumps(cases), str(ADDRESS_SPACE)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        out, err = proc.communicate(timeout=30 + SECONDS_PER_CASE * len(cases))
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    results = {r["case"]: r for r in map(json.loads, out.splitlines())}
    missing = [c[0] for c in cases if c[0] not in results]
    assert not missing, f"no result for {missing[0]} (hung or crashed): {err[-2000:]}"
    return results


# ------------------------------------------------------------------ hostile files
def safetensors_bytes(header: dict | bytes, data: bytes = b"") -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


def f32(shape, offsets) -> dict:
    return {"dtype": "F32", "shape": shape, "data_offsets": offsets}


#: name -> (header, data bytes, what the error must say); each becomes <name>.safetensors
SAFETENSORS = {
    # np.prod in int64 overflows to 0 and matches the empty byte range: 2**64 elements in 0 bytes
    "shape_overflow": (
        {"w": f32([4611686018427387904, 4], [0, 0])},
        b"",
        "'w' is F32[4611686018427387904, 4]",
    ),
    "float_shape": (
        {"w": f32([2.0, 2], [0, 16])},
        bytes(16),
        "shape [2.0, 2] holds 2.0, expected non-negative integers",
    ),
    "negative_shape": ({"w": f32([-1, -4], [0, 16])}, bytes(16), "holds -1, expected non-negative integers"),
    "bool_shape": ({"w": f32([True, 4], [0, 16])}, bytes(16), "holds True, expected non-negative integers"),
    "shape_not_list": ({"w": f32("4", [0, 16])}, bytes(16), "shape must be a list of integers, received '4'"),
    "offsets_outside": ({"w": f32([1000], [0, 4000])}, bytes(4), "data_offsets [0, 4000] outside the data"),
    "offsets_reversed": (
        {"w": f32([1], [8, 4])},
        bytes(8),
        "data_offsets [8, 4]: expected 0 <= begin <= end",
    ),
    "offsets_float": (
        {"w": f32([1], [0.0, 4.0])},
        bytes(4),
        "data_offsets must be two integers [begin, end]",
    ),
    "unknown_dtype": (
        {"w": {"dtype": "F99", "shape": [1], "data_offsets": [0, 4]}},
        bytes(4),
        "tensor 'w' has dtype 'F99', which tmon cannot compare",
    ),
    "entry_not_object": (
        {"w": [1, 2, 3]},
        b"",
        "entry 'w' is not an object with dtype, shape and data_offsets",
    ),
    "nested_200k": (
        b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "x": '
        + b"[" * 200_000
        + b"]" * 200_000
        + b"}",
        bytes(4),
        "nested 200001 levels deep, more than the 8 accepted",
    ),
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """Every hostile file, and one good checkpoint to pair them with; diffed once, in one child."""
    d = tmp_path_factory.mktemp("hostile")
    good = d / "good.safetensors"
    good.write_bytes(safetensors_bytes({"w": f32([3], [0, 12])}, np.ones(3, np.float32).tobytes()))
    cases, expect = [], {}

    def case(name, a, b, *needles, path=None):
        cases.append((name, str(a), str(b)))
        expect[name] = (needles, str(path if path is not None else a))

    for name, (header, data, needle) in SAFETENSORS.items():
        p = d / f"{name}.safetensors"
        p.write_bytes(safetensors_bytes(header, data))
        case(name, p, good, needle)
    p = d / "header_beyond_file.safetensors"
    p.write_bytes(struct.pack("<Q", 1000) + b'{"w": {}}')
    case("header_beyond_file", p, good, "truncated: the header needs 1008 bytes, the file has 17")
    p = d / "header_huge.safetensors"
    p.write_bytes(struct.pack("<Q", 2**63) + b'{"w": {}}')
    case("header_huge", p, good, f"it claims {2**63} bytes of header")

    # files that are not files: refused before open(), which would block (FIFO) or never end (/dev/zero)
    os.mkfifo(d / "fifo.safetensors")
    case("fifo", d / "fifo.safetensors", good, "a named pipe (FIFO), not a regular file: not opened")
    case("dev_zero", "/dev/zero", good, "a character device, not a regular file")
    os.symlink("/dev/zero", d / "zero.ckpt")
    case("symlink_to_device", d / "zero.ckpt", good, "a character device (a symlink to /dev/zero)")
    os.symlink(good, d / "link.safetensors")
    case("symlink_to_file", d / "link.safetensors", good)  # a symlink to a regular file is followed
    sock = socket.socket(socket.AF_UNIX)
    sock.bind(str(d / "sock.pt"))
    case("socket", d / "sock.pt", good, "a socket, not a regular file")
    _hf_dirs(d, good, case)
    _h5_files(d, case)
    _zips(d, good, case)
    _torch_files(d, good, case)

    results = run_cases(cases)
    sock.close()
    return results, expect, d


def _hf_dirs(d, good, case):
    fifo_weights = d / "hf_fifo_weights"
    fifo_weights.mkdir()
    os.mkfifo(fifo_weights / "model.safetensors")
    case(
        "hf_fifo_weights", fifo_weights, good, "a named pipe (FIFO)", path=fifo_weights / "model.safetensors"
    )
    escape = d / "hf_index_escape"
    escape.mkdir()
    (escape / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"w": "/dev/zero"}}))
    case(
        "hf_index_escape",
        escape,
        good,
        "the shard index names '/dev/zero', not a file in its directory",
        path=escape / "model.safetensors.index.json",
    )
    fifo_config = (
        d / "hf_fifo_config"
    )  # weights fine, config.json a FIFO: compared, the config left out with a note
    fifo_config.mkdir()
    (fifo_config / "model.safetensors").write_bytes(good.read_bytes())
    os.mkfifo(fifo_config / "config.json")
    case("hf_fifo_config", fifo_config, good)
    deep = d / "hf_index_deep"
    deep.mkdir()
    (deep / "model.safetensors.index.json").write_text("[" * 100_000 + "]" * 100_000)
    case(
        "hf_index_deep",
        deep,
        good,
        "the shard index: nested 100000 levels deep",
        path=deep / "model.safetensors.index.json",
    )


def _h5_files(d, case):
    h5py = pytest.importorskip("h5py")
    # Keras 3 names, datasets created but never written: HDF5 reads them as 2**36 fill values (256 GiB)
    for side in "ab":
        with h5py.File(d / f"unallocated_{side}.weights.h5", "w") as f:
            f.create_dataset("layers/dense/vars/0", shape=(2**36,), dtype="f4")
            f.create_dataset("layers/dense/vars/1", shape=(2**18, 2**18), dtype="f4", chunks=(1024, 1024))
    case(
        "h5_unallocated",
        d / "unallocated_a.weights.h5",
        d / "unallocated_b.weights.h5",
        "dataset 'layers/dense/vars/0' is float32[68719476736] (256.0 GiB) but the file stores 0 bytes of it",
    )
    with h5py.File(d / "virtual.weights.h5", "w") as f:
        layout = h5py.VirtualLayout(shape=(2**36,), dtype="f4")
        layout[:] = h5py.VirtualSource(str(d / "elsewhere.h5"), "data", shape=(2**36,))
        f.create_virtual_dataset("layers/dense/vars/0", layout, fillvalue=0)
    case(
        "h5_virtual",
        d / "virtual.weights.h5",
        d / "unallocated_b.weights.h5",
        "dataset 'layers/dense/vars/0' is a virtual dataset",
    )
    with h5py.File(d / "external.weights.h5", "w") as f:
        f.create_dataset(
            "layers/dense/vars/0", shape=(2**20,), dtype="f4", external=[("/dev/zero", 0, 2**22)]
        )
    case(
        "h5_external",
        d / "external.weights.h5",
        d / "unallocated_b.weights.h5",
        "dataset 'layers/dense/vars/0' keeps its data in external files ('/dev/zero'",
    )


def _keras_zip(path, weights: bytes | None = None, *, weights_zeros: int = 0, config: bytes = b"{}"):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("config.json", config)
        z.writestr("metadata.json", b'{"keras_version": "3"}')
        with z.open("model.weights.h5", "w", force_zip64=True) as w:
            if weights is not None:
                w.write(weights)
            block = bytes(1 << 20)
            for _ in range(weights_zeros >> 20):
                w.write(block)


def _zips(d, good, case):
    # 128 MiB of zeros deflate to ~130 KB: extracting them is what the bomb wants
    _keras_zip(d / "bomb.keras", weights_zeros=128 << 20)
    case("zip_bomb", d / "bomb.keras", good, "model.weights.h5 in the archive inflates", "a zip bomb?")
    with zipfile.ZipFile(d / "config_bomb.keras", "w", zipfile.ZIP_DEFLATED) as z:
        with z.open("config.json", "w", force_zip64=True) as w:
            for _ in range(80):
                w.write(b" " * (1 << 20))
        z.writestr("model.weights.h5", b"")
    case(
        "zip_config_bomb",
        d / "config_bomb.keras",
        good,
        "config.json in the archive inflates",
        f"to {80 << 20} (",
    )
    deep = d / "config_deep.keras"
    _keras_zip(deep, b"", config=b"[" * 50_000 + b"]" * 50_000)
    case("zip_config_deep", deep, good, "config.json in the archive: nested 50000 levels deep")
    # an end-of-central-directory record (ZIP64) that lists a billion members
    eocd64 = b"PK\x06\x06" + struct.pack("<QHHIIQQQQ", 44, 45, 45, 0, 0, 10**9, 10**9, 0, 0)
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, 0, 1)
    eocd = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 0xFFFFFFFF, 0xFFFFFFFF, 0)
    (d / "members.keras").write_bytes(eocd64 + locator + eocd)
    case(
        "zip_members",
        d / "members.keras",
        good,
        "the zip archive lists 1000000000 members, more than the 200000",
    )


def _torch_files(d, good, case):
    torch = pytest.importorskip("torch")
    torch.save({"w": torch.ones(1000)}, d / "full.pt")
    raw = (d / "full.pt").read_bytes()
    (d / "cut.pt").write_bytes(raw[: len(raw) // 2])
    case("torch_truncated", d / "cut.pt", good, "truncated or corrupt")
    # a legacy (pickle) file whose storage claims 2**31 elements, cut short: never 8 GiB allocated and filled
    torch.save({"w": torch.ones(123457)}, d / "legacy.pt", _use_new_zipfile_serialization=False)
    raw = (d / "legacy.pt").read_bytes()
    lie = raw.replace(b"J" + struct.pack("<i", 123457), b"J" + struct.pack("<i", 2**31 - 1), 1)
    (d / "legacy_lie.pt").write_bytes(lie[:4000])
    case("torch_legacy_lie", d / "legacy_lie.pt", good, "torch.load failed")
    # a torch zip whose tensor record is deflated zeros: torch's reader would inflate 128 MiB of them
    with (
        zipfile.ZipFile(d / "full.pt") as src,
        zipfile.ZipFile(d / "zbomb.pt", "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for info in src.infolist():
            if info.filename.endswith("data/0"):
                with out.open(info.filename, "w", force_zip64=True) as w:
                    for _ in range(128):
                        w.write(bytes(1 << 20))
            else:
                out.writestr(info.filename, src.read(info.filename))
    case("torch_zip_bomb", d / "zbomb.pt", good, "data/0 in the archive inflates", "a zip bomb?")
    # a legitimate torch.save of an expand()ed view: 4 bytes on disk, 256 GiB once made contiguous
    torch.save({"w": torch.zeros(1).expand(2**36)}, d / "expanded.pt")
    case(
        "torch_expanded",
        d / "expanded.pt",
        good,
        "tensor 'w': shape [68719476736] with strides [0]",
        "over a storage of 4 bytes",
    )
    # sparse tensors: an index past the shape (unchecked, making it dense segfaults), and 4 TiB once dense
    out_of_range = torch.sparse_coo_tensor(
        torch.tensor([[10**9]]), torch.tensor([1.0]), (4,), check_invariants=False
    )
    torch.save({"w": out_of_range}, d / "sparse_index.pt")
    case("torch_sparse_index", d / "sparse_index.pt", good, "size is inconsistent with indices")
    vast = torch.sparse_coo_tensor(torch.tensor([[0], [0]]), torch.tensor([1.0]), (2**20, 2**20))
    torch.save({"w": vast}, d / "sparse_vast.pt")
    case(
        "torch_sparse_vast",
        d / "sparse_vast.pt",
        good,
        "a sparse tensor of shape [1048576, 1048576], 4.0 TiB",
    )
    # hyperparameters that share one dict 2**60 ways (a few hundred bytes pickled) and one that holds itself
    dag = {"leaf": 1.0}
    for _ in range(60):
        dag = {"a": dag, "b": dag}
    loop = {"lr": 0.1}
    loop["self"] = loop
    torch.save(
        {
            "state_dict": {"w": torch.ones(3)},
            "global_step": 5,
            "hyper_parameters": {"loop": loop, "dag": dag},
        },
        d / "shared.ckpt",
    )
    case("torch_shared_params", d / "shared.ckpt", d / "shared.ckpt")


# ------------------------------------------------------------------ the hostile cases, one test each
# cases that must compare: what is bounded is walking their parameters
COMPARED = ["torch_shared_params", "hf_fifo_config", "symlink_to_file"]
CASES = [
    *SAFETENSORS,
    "header_beyond_file",
    "header_huge",
    "fifo",
    "dev_zero",
    "symlink_to_device",
    "socket",
    "hf_fifo_weights",
    "hf_index_escape",
    "hf_index_deep",
    "h5_unallocated",
    "h5_virtual",
    "h5_external",
    "zip_bomb",
    "zip_config_bomb",
    "zip_config_deep",
    "zip_members",
    "torch_truncated",
    "torch_legacy_lie",
    "torch_zip_bomb",
    "torch_expanded",
    "torch_sparse_index",
    "torch_sparse_vast",
]


@pytest.mark.slow  # the fixture builds ~30 files and diffs them in a child importing torch
@pytest.mark.parametrize("name", CASES)
def test_hostile_file_is_refused_in_bounded_time_and_memory(hostile, name):
    results, expect, _ = hostile
    r = results[name]
    needles, path = expect[name]
    assert r.get("error") == "CheckpointError", r
    assert r["path"] == path, r
    msg = r["message"]
    assert msg.startswith(f"{path}: ") and "\n" not in msg, msg
    for needle in needles:
        assert needle in msg, (needle, msg)
    assert r["seconds"] < SECONDS_PER_CASE, r


@pytest.mark.slow
def test_parameters_sharing_one_dict_are_walked_in_bounded_time(hostile):
    r = hostile[0]["torch_shared_params"]
    assert r.get("ok"), r
    assert r["seconds"] < SECONDS_PER_CASE
    assert any("more than 200000 values; the rest were not read" in n for n in r["notes"]), r["notes"]
    p = r["params"]
    assert p["hparams.loop.lr"] == "0.1"
    cut = [k for k, v in p.items() if v == "<nested more than 32 levels deep: not read>" and ".loop." in k]
    assert cut == ["hparams" + ".loop" + ".self" * 31]  # the dict holding itself, followed 32 levels


@pytest.mark.slow
def test_a_fifo_beside_good_weights_is_left_out_and_a_symlink_followed(hostile):
    results, _, d = hostile
    r = results["hf_fifo_config"]
    assert r.get("ok") and r["seconds"] < SECONDS_PER_CASE, r
    assert any(n.startswith("a: config.json unreadable (a named pipe (FIFO)") for n in r["notes"]), r["notes"]
    assert results["symlink_to_file"].get("ok"), results["symlink_to_file"]


@pytest.mark.slow
def test_expected_cases_are_all_tested(hostile):
    assert set(hostile[1]) == set(CASES) | set(COMPARED)


# ------------------------------------------------------------------ the CLI
def _limited():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))


@pytest.mark.slow
@pytest.mark.parametrize(
    "a, b",
    [
        ("shape_overflow.safetensors", "good.safetensors"),
        ("fifo.safetensors", "good.safetensors"),
        ("unallocated_a.weights.h5", "unallocated_b.weights.h5"),
        ("bomb.keras", "good.safetensors"),
    ],
)
def test_tmon_diff_on_a_hostile_file_says_one_line_and_exits_2(hostile, a, b):
    d = hostile[2]
    proc = subprocess.run(
        [sys.executable, "-m", "tmon_core.cli", "diff", str(d / a), str(d / b)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=_limited,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == "" and "Traceback" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"tmon diff: {d / a}: "), proc.stderr


# ------------------------------------------------------------------ a checkpoint path written again
def _weights(path, value: float):
    from safetensors.numpy import save_file

    save_file({"w": np.full(3, value, np.float32)}, path)


def _ids(store_url, run_id) -> list[int]:
    from tmon_core import open_store

    with open_store(store_url) as store:
        return store.run(run_id).checkpoints(include_deleted=True).sort_values("id").id.tolist()


def test_a_recorded_checkpoint_whose_path_was_written_again_is_refused(tmp_path, store_url, capsys):
    from tmon_core import Recorder
    from tmon_core.cli import main as tmon_main
    from tmon_core.diff import CheckpointError, diff

    last, other = tmp_path / "last.safetensors", tmp_path / "other.safetensors"
    _weights(other, 0.0)
    rec = Recorder(store_url, flush_interval=0.05)
    _weights(last, 1.0)
    rec.checkpoint(last, step=1)
    _weights(last, 15.0)  # the same path, written again: record 1's weights are gone
    rec.checkpoint(last, step=15)
    rec.close()
    old, new = _ids(store_url, rec.run_id)

    with pytest.raises(CheckpointError) as exc:
        diff(old, new, store=store_url)
    assert exc.value.path == old
    msg = str(exc.value)
    assert f"checkpoint {old}: recorded at {last}" in msg and "step 1)" in msg
    assert f"overwritten since: checkpoint {new} (run {rec.run_id}, step 15)" in msg
    assert "pass the path" in msg
    # the newer record and the path itself are what the file now holds
    d = diff(new, other, store=store_url)
    assert d.summary["a"]["id"] == new and d.summary["a"]["step"] == 15
    by_path = diff(last, other, store=store_url)
    assert by_path.summary["a"]["id"] == new and by_path.summary["a"]["step"] == 15
    assert by_path.layers.set_index("name").loc["w"].norm_a == pytest.approx(15 * 3**0.5)

    assert tmon_main(["--store", store_url, "diff", str(old), str(new)]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "was overwritten since" in err[0] and f"checkpoint {new}" in err[0]


def test_a_recorded_checkpoint_marked_deleted_is_refused_unless_given_by_path(tmp_path, store_url):
    from tmon_core import Recorder
    from tmon_core.diff import CheckpointError, diff

    ckpt, other = tmp_path / "best.safetensors", tmp_path / "other.safetensors"
    _weights(other, 0.0)
    _weights(ckpt, 2.0)
    rec = Recorder(store_url, flush_interval=0.05)
    rec.checkpoint(ckpt, step=7)
    rec.checkpoint_removed(ckpt)  # pruned, then something unrecorded wrote the same path again
    rec.close()
    _weights(ckpt, 3.0)
    (only,) = _ids(store_url, rec.run_id)
    with pytest.raises(CheckpointError, match="the store marks it deleted or overwritten") as exc:
        diff(only, other, store=store_url)
    assert exc.value.path == only and "step 7" in str(exc.value)
    # the file by its path is compared as it is now, and not labelled with the deleted record
    d = diff(ckpt, other, store=store_url)
    assert d.summary["a"]["id"] is None and d.summary["a"]["step"] is None
    assert d.layers.set_index("name").loc["w"].norm_a == pytest.approx(3 * 3**0.5)
