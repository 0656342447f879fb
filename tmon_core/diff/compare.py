"""Numbers for one pair of tensors, computed a slice at a time.

For each pair the sums ``Σa²``, ``Σb²``, ``Σ(b-a)²``, ``Σab`` (float64 across slices), the
largest ``|b-a|`` and how many elements differ. Floating tensors are compared in float32
(float16, bfloat16 and float8 widened to it) or float64 when either side is float64; dot products
run over blocks of 65,536 elements so float32 accumulation stays within ~1e-7 relative. Integer
and bool tensors are compared exactly, in int64. A slice holding NaN or ±inf is redone in float64:
NaN == NaN and equal infinities count as unchanged there, and norms over NaN read as NaN.

Peak memory is a few slices (``CHUNK`` elements each), whatever the tensor's size; the next pair
of slices is read on a second thread while this one is computed, so reading and arithmetic overlap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 20  # elements per side per read
BLOCK = 1 << 16  # elements per float32 dot product

Reader = Callable[[int, int], np.ndarray]


@dataclass
class TensorStats:
    numel: int = 0
    sq_a: float = 0.0
    sq_b: float = 0.0
    sq_diff: float = 0.0
    dot: float = 0.0
    max_abs_diff: float = 0.0
    n_changed: int = 0

    @property
    def norm_a(self) -> float:
        return math.sqrt(self.sq_a) if self.sq_a == self.sq_a else math.nan

    @property
    def norm_b(self) -> float:
        return math.sqrt(self.sq_b) if self.sq_b == self.sq_b else math.nan

    @property
    def norm_diff(self) -> float:
        return math.sqrt(self.sq_diff) if self.sq_diff == self.sq_diff else math.nan

    @property
    def rel_change(self) -> float:
        """‖b-a‖ / ‖a‖ (0 when both are 0, inf when only ‖a‖ is)."""
        na, nd = self.norm_a, self.norm_diff
        if na != na or nd != nd:
            return math.nan
        if na == 0:
            return 0.0 if nd == 0 else math.inf
        return nd / na

    @property
    def cosine(self) -> float:
        """a·b / (‖a‖‖b‖); NaN when either is all zeros."""
        den = self.norm_a * self.norm_b
        if not den or den != den or self.dot != self.dot:
            return math.nan
        return max(-1.0, min(1.0, self.dot / den))

    @property
    def frac_changed(self) -> float:
        return self.n_changed / self.numel if self.numel else 0.0


def chunk_bounds(shape: tuple[int, ...], chunk: int | None = None) -> list[tuple[int, int]]:
    """Slices of the flattened tensor, aligned to whole rows where rows are short (HDF5 reads rows)."""
    chunk = chunk or CHUNK
    numel = math.prod(shape)
    row = math.prod(shape[1:]) if len(shape) > 1 else 1
    step = max(1, chunk // row) * row if 0 < row <= chunk else chunk
    return [(s, min(s + step, numel)) for s in range(0, numel, step)]


def _pairs(read_a: Reader, read_b: Reader | None, bounds, pool: ThreadPoolExecutor | None) -> Iterator:
    def fetch(se):
        return read_a(*se), (read_b(*se) if read_b is not None else None)

    if pool is None or len(bounds) < 2:
        for se in bounds:
            yield fetch(se)
        return
    pending = pool.submit(fetch, bounds[0])
    for i in range(len(bounds)):
        got = pending.result()
        if i + 1 < len(bounds):
            pending = pool.submit(fetch, bounds[i + 1])
        yield got


def _float_type(*dtypes) -> type:
    return (
        np.float64
        if any(d == np.float64 or d.kind in "iu" and d.itemsize >= 4 for d in dtypes)
        else np.float32
    )


def compare(
    read_a: Reader,
    read_b: Reader,
    shape: tuple[int, ...],
    pool: ThreadPoolExecutor | None = None,
    chunk: int | None = None,
) -> TensorStats:
    """Stats of ``b - a`` for two tensors of ``shape`` read through ``read_a``/``read_b``."""
    st = TensorStats(numel=math.prod(shape))
    for a, b in _pairs(read_a, read_b, chunk_bounds(shape, chunk), pool):
        if a.size != b.size:
            raise ValueError(f"slices differ in size: {a.size} vs {b.size}")
        if a.dtype.kind in "biu" and b.dtype.kind in "biu":
            _int_chunk(st, a, b)
        else:
            _float_chunk(st, a, b, _float_type(a.dtype, b.dtype))
    return st


def norm_sq(
    read: Reader, shape: tuple[int, ...], pool: ThreadPoolExecutor | None = None, chunk: int | None = None
) -> float:
    """Σx² of one tensor (for tensors only one side has)."""
    total = 0.0
    for a, _ in _pairs(read, None, chunk_bounds(shape, chunk), pool):
        if a.dtype.kind in "biu":
            x = a.astype(np.float64)
            total += float(np.dot(x, x))
        else:
            x = a.astype(_float_type(a.dtype), copy=False)
            with np.errstate(over="ignore"):
                part = sum(float(np.dot(x[s : s + BLOCK], x[s : s + BLOCK])) for s in range(0, x.size, BLOCK))
            if math.isinf(part) and x.dtype != np.float64:  # float32 overflow: redo in float64
                x = x.astype(np.float64)
                part = float(np.dot(x, x))
            total += part
    return total


def _int_chunk(st: TensorStats, a: np.ndarray, b: np.ndarray) -> None:
    x, y = a.astype(np.int64), b.astype(np.int64)
    d = y - x
    st.n_changed += int(np.count_nonzero(d))
    if d.size:
        st.max_abs_diff = max(st.max_abs_diff, float(np.abs(d).max()))
    xf, yf, df = x.astype(np.float64), y.astype(np.float64), d.astype(np.float64)
    st.sq_a += float(np.dot(xf, xf))
    st.sq_b += float(np.dot(yf, yf))
    st.sq_diff += float(np.dot(df, df))
    st.dot += float(np.dot(xf, yf))


def _float_chunk(st: TensorStats, a: np.ndarray, b: np.ndarray, ftype) -> None:
    with np.errstate(invalid="ignore", over="ignore"):  # inf - inf and overflow are handled below
        _float_chunk_inner(st, a, b, ftype)


def _float_chunk_inner(st: TensorStats, a: np.ndarray, b: np.ndarray, ftype) -> None:
    x, y = a.astype(ftype, copy=False), b.astype(ftype, copy=False)
    d = np.subtract(y, x)
    sa = sb = sd = ab = 0.0
    for s in range(0, d.size, BLOCK):
        xs, ys, ds = x[s : s + BLOCK], y[s : s + BLOCK], d[s : s + BLOCK]
        sa += float(np.dot(xs, xs))
        sb += float(np.dot(ys, ys))
        sd += float(np.dot(ds, ds))
        ab += float(np.dot(xs, ys))
    if math.isfinite(sa + sb + sd + ab):
        np.abs(d, out=d)
        if d.size:
            st.max_abs_diff = max(st.max_abs_diff, float(d.max()))
        st.n_changed += int(np.count_nonzero(d))
    else:  # NaN or inf somewhere (or float32 overflow): exact bookkeeping in float64
        x, y = x.astype(np.float64), y.astype(np.float64)
        same = (x == y) | (np.isnan(x) & np.isnan(y))
        st.n_changed += int(same.size - np.count_nonzero(same))
        d = y - x
        d[same] = 0.0  # equal infinities and NaN-for-NaN are no change
        sa, sb, sd, ab = (float(np.dot(x, x)), float(np.dot(y, y)), float(np.dot(d, d)), float(np.dot(x, y)))
        if d.size:
            m = float(np.max(np.abs(d)))
            st.max_abs_diff = m if m != m else max(st.max_abs_diff, m)
    st.sq_a += sa
    st.sq_b += sb
    st.sq_diff += sd
    st.dot += ab
