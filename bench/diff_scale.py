"""How fast does ``tmon_core.diff`` compare two ~1 GB checkpoints, and with how much memory?

Writes two synthetic safetensors checkpoints shaped like a small transformer (float32 matrices, a
bfloat16 head; B = A plus noise on half the layers, one tensor added, one removed, one reshaped),
then diffs them in fresh processes, each measured for wall time, throughput (bytes of both files /
wall time) and peak RSS (``ru_maxrss``, and above the process's RSS after its imports):

  tmon diff            the real thing: header checked, slices read with pread, compared as read
                       (and, apart, the time to open both files: headers parsed and every field checked)
  safe_open + compare  the same arithmetic on tensors from safetensors' ``safe_open`` (memory-mapped)
  naive: load both     ``safetensors.numpy.load_file`` of both files into RAM, then the same arithmetic
  read both files      no arithmetic: the two files read in 8 MiB blocks (what the disk allows)

"cold" runs first evict the files from the page cache (``posix_fadvise(DONTNEED)``, no root needed);
"warm" runs find them cached, so they show the arithmetic's own speed. The files are deleted at
the end unless ``--keep``.

    .venv/bin/python bench/diff_scale.py [--quick] [--size-gb 1.0] [--dir /tmp]
"""

from __future__ import annotations

import json
import math
import os
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np
from _util import header, num, ok, table

HIDDEN = 1024
VOCAB = 32000


def layout(size_gb: float) -> list[tuple[str, tuple[int, ...], str]]:
    """Tensor names, shapes and dtypes adding up to about ``size_gb`` GB."""
    per_layer = [
        ("attn.qkv.weight", (3 * HIDDEN, HIDDEN)),
        ("attn.qkv.bias", (3 * HIDDEN,)),
        ("attn.proj.weight", (HIDDEN, HIDDEN)),
        ("attn.proj.bias", (HIDDEN,)),
        ("mlp.fc1.weight", (4 * HIDDEN, HIDDEN)),
        ("mlp.fc1.bias", (4 * HIDDEN,)),
        ("mlp.fc2.weight", (HIDDEN, 4 * HIDDEN)),
        ("mlp.fc2.bias", (HIDDEN,)),
        ("ln1.weight", (HIDDEN,)),
        ("ln1.bias", (HIDDEN,)),
        ("ln2.weight", (HIDDEN,)),
        ("ln2.bias", (HIDDEN,)),
    ]
    layer_bytes = sum(math.prod(s) for _, s in per_layer) * 4
    fixed = [
        ("embed.weight", (VOCAB, HIDDEN), "F32"),
        ("lm_head.weight", (VOCAB, HIDDEN), "BF16"),
        ("final_ln.weight", (HIDDEN,), "F32"),
        ("step_counter", (1,), "I64"),
    ]
    fixed_bytes = VOCAB * HIDDEN * 6
    n_layers = max(1, round((size_gb * 1e9 - fixed_bytes) / layer_bytes))
    out = [(n, s, d) for n, s, d in fixed[:1]]
    for i in range(n_layers):
        out += [(f"layers.{i}.{n}", s, "F32") for n, s in per_layer]
    return out + fixed[1:]


def _tensor(name: str, shape, dtype: str, side: str) -> np.ndarray:
    seed = sum(map(ord, name)) * 7919 + len(name)
    rng = np.random.default_rng(seed)
    if dtype == "I64":
        return np.array([1000 if side == "a" else 2000], dtype=np.int64)
    x = rng.standard_normal(shape, dtype=np.float32) * 0.02
    layer = int(name.split(".")[1]) if name.startswith("layers.") else -1
    if side == "b" and (layer % 2 == 0 or name == "lm_head.weight"):  # half the layers trained on
        x += np.random.default_rng(seed + 1).standard_normal(shape, dtype=np.float32) * 1e-3
    if dtype == "BF16":
        return (x.view(np.uint32) >> 16).astype(np.uint16)
    return x


def write_checkpoint(path: str, side: str, tensors) -> int:
    """Write a safetensors file tensor by tensor (never the whole checkpoint in memory)."""
    tensors = list(tensors)
    if side == "b":  # one removed, one added, one reshaped
        tensors = [t for t in tensors if t[0] != "final_ln.weight"] + [("final_ln.scale", (HIDDEN,), "F32")]
        tensors = [(n, (HIDDEN, 2) if n == "layers.0.ln1.weight" else s, d) for n, s, d in tensors]
    size = {"F32": 4, "BF16": 2, "I64": 8}
    head, offset = {}, 0
    for name, shape, dtype in tensors:
        nbytes = math.prod(shape) * size[dtype]
        head[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    blob = json.dumps(head, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for name, shape, dtype in tensors:
            f.write(_tensor(name, shape, dtype, side).tobytes())
        f.flush()
        os.fsync(f.fileno())
    return os.path.getsize(path)


def evict(paths) -> None:
    for p in paths:
        fd = os.open(p, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def warm(paths) -> None:
    buf = bytearray(8 << 20)
    for p in paths:
        with open(p, "rb", buffering=0) as f:
            while f.readinto(buf):
                pass


# ------------------------------------------------------------------ the measured methods (child processes)
def _hwm() -> int:
    """Peak RSS of this process image. Not ``ru_maxrss``: Linux carries that over fork and exec, so a
    child would report the parent's peak; ``VmHWM`` starts afresh with the new program."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _summary_from_stats(stats: dict) -> dict:
    from tmon_core.diff import compare

    tot = compare.TensorStats()
    for st in stats.values():
        for k in ("numel", "sq_a", "sq_b", "sq_diff", "dot", "n_changed"):
            setattr(tot, k, getattr(tot, k) + getattr(st, k))
    changed = sum(1 for st in stats.values() if st.n_changed)
    return {"changed": changed, "rel_change": tot.rel_change, "frac_changed": tot.frac_changed}


def _compare_arrays(get_a, get_b, names_a, names_b) -> dict:
    """The engine's arithmetic over tensors handed over whole (by the naive and safe_open methods)."""
    from tmon_core.checkpoints.safetensors import bf16_to_f32
    from tmon_core.diff import compare

    stats = {}
    for name in names_a:
        if name not in names_b:
            continue
        a, b = get_a(name), get_b(name)
        if a.shape != b.shape:
            continue
        fa, fb = a.reshape(-1), b.reshape(-1)
        if fa.dtype == np.uint16 and name == "lm_head.weight":  # numpy has no bfloat16: raw bits
            fa, fb = bf16_to_f32(fa), bf16_to_f32(fb)
        stats[name] = compare.compare(lambda s, e, x=fa: x[s:e], lambda s, e, y=fb: y[s:e], a.shape)
    return _summary_from_stats(stats)


def child(method: str, a: str, b: str) -> None:
    import pandas  # noqa: F401  (the diff's result is DataFrames: a user has pandas loaded anyway)

    from tmon_core.diff import diff  # imported before the baseline, as a user would have them

    if method in ("naive", "safe_open"):
        import torch  # noqa: F401  (safetensors' numpy getter has no bfloat16: read as torch, view the bits)
        from safetensors import safe_open
        from safetensors.torch import load_file
    base = _rss()
    t0 = time.perf_counter()
    if method == "tmon":
        s = diff(a, b).summary
        result = {"changed": s["changed"], "rel_change": s["rel_change"], "frac_changed": s["frac_changed"]}
        from tmon_core.diff import open_checkpoint

        t1 = time.perf_counter()  # the headers alone, every field checked (guard.py): part of the wall above
        for p in (a, b):
            open_checkpoint(p).close()
        result["open"] = time.perf_counter() - t1
    elif method == "naive":
        ta, tb = load_file(a), load_file(b)
        result = _compare_arrays(lambda n: _np(ta[n]), lambda n: _np(tb[n]), list(ta), set(tb))
    elif method == "safe_open":
        with safe_open(a, framework="pt") as fa, safe_open(b, framework="pt") as fb:
            result = _compare_arrays(
                lambda n: _np(fa.get_tensor(n)),
                lambda n: _np(fb.get_tensor(n)),
                list(fa.keys()),
                set(fb.keys()),
            )
    elif method == "read":
        buf = bytearray(8 << 20)
        for p in (a, b):
            with open(p, "rb", buffering=0) as f:
                while f.readinto(buf):
                    pass
        result = {}
    else:
        raise SystemExit(f"unknown method {method!r}")
    wall = time.perf_counter() - t0
    peak = _hwm()
    print(json.dumps({"wall": wall, "peak": peak, "base": base, **result}))


def _np(t) -> np.ndarray:
    import torch

    return t.view(torch.int16).numpy().view(np.uint16) if t.dtype == torch.bfloat16 else t.numpy()


def run(method: str, a: str, b: str, cold: bool, repeat: int) -> dict:
    """The fastest of ``repeat`` runs (the machine is shared: the others measure interference)."""
    return min((_run_once(method, a, b, cold) for _ in range(repeat)), key=lambda r: r["wall"])


def _run_once(method: str, a: str, b: str, cold: bool) -> dict:
    if cold:
        evict([a, b])
    else:
        warm([a, b])
    out = subprocess.run(
        [sys.executable, __file__, "--child", method, a, b],
        capture_output=True,
        text=True,
        cwd=os.path.dirname(os.path.abspath(__file__)),
        env={**os.environ, "PYTHONPATH": REPO},
    )
    if out.returncode != 0:
        raise SystemExit(f"{method} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.path.insert(0, REPO)
        child(*sys.argv[2:5])
        return
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the smallest checkpoints (~0.25 GB), one run each")
    p.add_argument("--size-gb", type=float, default=1.0, help="size of each checkpoint (default 1.0)")
    p.add_argument(
        "--dir", default=None, help="where to write the checkpoints (default: the system temp dir)"
    )
    p.add_argument("--keep", action="store_true", help="keep the checkpoints")
    p.add_argument("--repeat", type=int, default=2, help="runs per method, the fastest reported (default 2)")
    args = p.parse_args()
    size = 0.1 if args.quick else args.size_gb
    header(f"checkpoint diff of two ~{max(size, 0.25):g} GB safetensors files", args.quick)
    work = tempfile.mkdtemp(prefix="tmon-diff-bench-", dir=args.dir)
    try:
        a, b = os.path.join(work, "a.safetensors"), os.path.join(work, "b.safetensors")
        tensors = layout(size)
        t0 = time.perf_counter()
        total = write_checkpoint(a, "a", tensors) + write_checkpoint(b, "b", tensors)
        largest = max(math.prod(s) * (2 if d == "BF16" else 4) for _, s, d in tensors)
        print(
            f"wrote {len(tensors)} tensors per file, {total / 1e9:.2f} GB in all, largest tensor "
            f"{largest / 1e6:.0f} MB, in {time.perf_counter() - t0:.1f} s (to {work})\n"
        )
        rows, results = [], {}
        plan = [
            ("tmon diff", "tmon", True),
            ("tmon diff", "tmon", False),
            ("safe_open + compare", "safe_open", True),
            ("safe_open + compare", "safe_open", False),
            ("naive: load both", "naive", True),
            ("read both files", "read", True),
            ("read both files", "read", False),
        ]
        for label, method, cold in plan:
            r = run(method, a, b, cold, 1 if args.quick else args.repeat)
            results[(method, cold)] = r
            rows.append(
                [
                    f"{label} ({'cold' if cold else 'warm'})",
                    num(r["wall"]),
                    num(total / 1e6 / r["wall"], "{:,.0f}"),
                    num(r["peak"] / 1e6, "{:,.0f}"),
                    num((r["peak"] - r["base"]) / 1e6, "{:,.0f}"),
                ]
            )
        table(["method", "wall s", "MB/s", "peak RSS MB", "above imports MB"], rows)
        ref = results[("tmon", True)]
        agree = all(
            abs(r["rel_change"] - ref["rel_change"]) <= 1e-6 * ref["rel_change"]
            and r["changed"] == ref["changed"]
            for (m, _), r in results.items()
            if m != "read"
        )
        print(
            f"{ok(agree)}: every method finds the same {ref['changed']} changed tensors and global relative change "
            f"{ref['rel_change']:.6g} ({100 * ref['frac_changed']:.1f}% of elements changed)"
        )
        extra = (ref["peak"] - ref["base"]) / 1e6
        print(
            f"tmon diff: peak memory above imports {extra:,.0f} MB = {extra / (largest / 1e6):.2f}x the largest tensor "
            f"({largest / 1e6:.0f} MB); cold {total / 1e6 / ref['wall']:,.0f} MB/s, where reading the two files one "
            f"after the other, without arithmetic, runs at {total / 1e6 / results[('read', True)]['wall']:,.0f} MB/s"
        )
        print(
            f"tmon diff: opening both files (headers parsed, every field checked against the file) "
            f"{1e3 * ref['open']:.1f} ms of the {ref['wall']:.2f} s"
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
