"""``CheckpointDiff``: the result of ``diff(a, b)``, as plain Python and pandas."""

from __future__ import annotations

import html
import math
from typing import Any

#: the columns of ``CheckpointDiff.layers``
LAYER_COLUMNS = [
    "name",
    "status",
    "shape",
    "dtype",
    "shape_a",
    "dtype_a",
    "numel",
    "norm_a",
    "norm_b",
    "norm_diff",
    "rel_change",
    "cosine",
    "max_abs_diff",
    "frac_changed",
]
PARAM_COLUMNS = ["key", "a", "b", "status"]
METRIC_COLUMNS = ["key", "a", "b", "change", "step_a", "step_b"]
#: statuses, in the order a summary lists them
STATUSES = ("changed", "unchanged", "added", "removed", "shape_changed", "skipped")


def _pd():
    import pandas as pd

    return pd


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None or type(v).__name__ == "NAType":
        return "-"
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        return f"{v:.{digits}g}"
    if isinstance(v, tuple):
        return "[" + ", ".join(map(str, v)) + "]"
    return str(v)


class CheckpointDiff:
    """What changed between checkpoint ``a`` and checkpoint ``b``.

    Attributes:
        summary: totals: tensors compared, changed, unchanged, added, removed, shape_changed,
            skipped; ``rel_change`` (‖b-a‖/‖a‖ over every compared tensor), ``cosine``,
            ``frac_changed``; both sides (``a``/``b``: path, format, id, run, step, epoch);
            ``params_changed``, ``bytes_read``, ``seconds``.
        layers: one row per tensor (see ``LAYER_COLUMNS``); ``shape``/``dtype`` are b's (a's for a
            removed tensor), ``shape_a``/``dtype_a`` a's.
        params: the hyperparameters, configuration and optimizer settings that differ
            (``params_all`` has the unchanged ones too).
        metrics: the metrics at each checkpoint, side by side, with the step each was logged at.
        changes: parameter changes tmon's controller applied between the two checkpoints (both
            recorded in one run): step, change, source (schedule, request...), request_id, old, new.
        notes: what was skipped or could not be read, and why.
    """

    def __init__(
        self,
        summary: dict,
        layers: list[dict],
        params: list[dict],
        metrics: list[dict],
        notes: list[str] | None = None,
        changes: list[dict] | None = None,
    ):
        pd = _pd()
        self.changes = list(changes or [])
        self.summary = summary
        self.notes = list(notes or [])
        self.summary["notes"] = self.notes
        self.layers = pd.DataFrame(layers, columns=LAYER_COLUMNS)
        self.params_all = pd.DataFrame(params, columns=PARAM_COLUMNS)
        self.metrics = pd.DataFrame(metrics, columns=METRIC_COLUMNS)
        for c in ("step_a", "step_b"):
            self.metrics[c] = self.metrics[c].astype("Int64")

    @property
    def params(self):
        """Parameters that differ between the two checkpoints: key, a, b, status (changed/added/removed)."""
        return self.params_all[self.params_all.status != "same"].reset_index(drop=True)

    def top(self, n: int = 10, by: str = "rel_change"):
        """The ``n`` most-changed tensors of those compared, by ``by`` (``rel_change``, ``norm_diff``,
        ``max_abs_diff``, ``frac_changed``; largest first)."""
        if by not in ("rel_change", "norm_diff", "max_abs_diff", "frac_changed", "cosine"):
            raise ValueError(
                f"by must be rel_change, norm_diff, max_abs_diff, frac_changed or cosine, received by={by!r}"
            )
        if not isinstance(n, int) or n < 0:
            raise ValueError(f"n must be a non-negative int, received n={n!r}")
        df = self.layers[self.layers.status.isin(("changed", "unchanged"))]
        return (
            df.sort_values(by, ascending=(by == "cosine"), kind="stable", na_position="last")
            .head(n)
            .reset_index(drop=True)
        )

    def to_dict(self) -> dict:
        """Everything as plain Python (lists of row dicts); NaN stays a float NaN."""

        def rows(df):
            out = df.astype(object).where(df.notna(), None).to_dict("records")
            for r in out:
                for k, v in r.items():
                    if isinstance(v, tuple):
                        r[k] = list(v)
            return out

        layers = rows(self.layers)
        for r in layers:  # keep NaN as NaN for the numeric columns (None means "not applicable" elsewhere)
            for k in (
                "norm_a",
                "norm_b",
                "norm_diff",
                "rel_change",
                "cosine",
                "max_abs_diff",
                "frac_changed",
            ):
                if r[k] is None:
                    r[k] = math.nan
        return {
            "summary": dict(self.summary),
            "layers": layers,
            "params": rows(self.params),
            "metrics": rows(self.metrics),
            "changes": [dict(c) for c in self.changes],
        }

    # ------------------------------------------------------------------ display
    def _side(self, key: str) -> str:
        s = self.summary[key]
        bits = [s["format"]]
        if s.get("id") is not None:
            bits.append(f"id {s['id']}, run {s['run_id']}")
        if s.get("step") is not None:
            bits.append(f"step {s['step']}")
        if s.get("epoch") is not None:
            bits.append(f"epoch {_fmt(s['epoch'])}")
        return f"{s['path']} ({', '.join(bits)})"

    def counts(self) -> str:
        """One line: how many tensors, and how many changed, stayed, appeared, went..."""
        s = self.summary
        return f"{s['tensors']} tensors: " + ", ".join(
            f"{s[k]} {k.replace('_', '-')}" for k in STATUSES if s[k] or k in ("changed", "unchanged")
        )

    def overall(self) -> str:
        """One line: the relative change, the cosine, the share of elements that changed."""
        s = self.summary
        return (
            f"relative change {_fmt(s['rel_change'])}, cosine {_fmt(s['cosine'], 8)}, "
            f"{100 * s['frac_changed']:.1f}% of {s['numel_compared']:,} elements changed"
        )

    def format(self, top: int = 10) -> str:
        """A plain-text report (what ``repr`` and ``tmon diff`` show)."""
        lines = [
            f"a  {self._side('a')}",
            f"b  {self._side('b')}",
            self.counts(),
            "overall  " + self.overall(),
        ]
        if self.summary.get("name_mapping"):
            lines.append(self.summary["name_mapping"])
        t = self.top(top)
        if len(t):
            lines += ["", f"most changed tensors (top {len(t)} by relative change):"]
            lines += _table(
                t,
                ["name", "status", "shape", "numel", "rel_change", "cosine", "max_abs_diff", "frac_changed"],
            )
        other = self.layers[~self.layers.status.isin(("changed", "unchanged"))]
        if len(other):
            lines += ["", "added / removed / shape-changed / skipped:"]
            shown = other.head(max(top, 1)).copy()
            shown["shape"] = [
                f"{_fmt(a)} -> {_fmt(b)}" if st == "shape_changed" else _fmt(b)
                for a, b, st in zip(shown.shape_a, shown["shape"], shown.status, strict=True)
            ]
            lines += _table(shown, ["name", "status", "shape", "numel", "norm_a", "norm_b"])
            if len(other) > len(shown):
                lines.append(f"  ... and {len(other) - len(shown)} more")
        p = self.params
        if len(p):
            shown = p.head(max(top, 1) * 3).astype(object)
            shown.loc[shown.status == "added", "a"] = "(absent)"
            shown.loc[shown.status == "removed", "b"] = "(absent)"
            lines += ["", f"parameters that differ ({len(p)}):"] + _table(shown, ["key", "a", "b"])
            if len(p) > max(top, 1) * 3:
                lines.append(f"  ... and {len(p) - max(top, 1) * 3} more")
        else:
            lines += ["", "parameters: no differences"]
        if self.changes:
            lines += ["", "parameter changes tmon applied between the checkpoints:"]
            lines += [f"  step {c['step']}: {c['change']} ({c['source'] or '?'})" for c in self.changes]
        if len(self.metrics):
            lines += ["", "metrics at each checkpoint:"] + _table(
                self.metrics, ["key", "a", "b", "change", "step_a", "step_b"]
            )
        if self.notes:
            lines += ["", "notes:"] + [f"  {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return "CheckpointDiff\n" + self.format()

    def _repr_html_(self) -> str:
        e = html.escape
        head = (
            f"<b>CheckpointDiff</b><br>a: <code>{e(self._side('a'))}</code><br>b: <code>{e(self._side('b'))}</code>"
            f"<br>{e(self.counts())}<br>overall: {e(self.overall())}"
        )
        parts = [head, "<h4>Most changed tensors</h4>", self.top(20).to_html(index=False, na_rep="-")]
        if len(self.params):
            parts += ["<h4>Parameters that differ</h4>", self.params.to_html(index=False, na_rep="-")]
        if len(self.metrics):
            parts += ["<h4>Metrics</h4>", self.metrics.to_html(index=False, na_rep="-")]
        if self.notes:
            parts += ["<h4>Notes</h4><ul>" + "".join(f"<li>{e(n)}</li>" for n in self.notes) + "</ul>"]
        return "<div>" + "".join(parts) + "</div>"


def _table(df, cols: list[str]) -> list[str]:
    cells = [cols] + [[_fmt(v) for v in row] for row in df[cols].itertuples(index=False)]
    widths = [min(60, max(len(r[i]) for r in cells)) for i in range(len(cols))]
    out = []
    for r in cells:
        out.append(
            "  "
            + "  ".join(
                (c if len(c) <= 60 else c[:57] + "...").ljust(w) for c, w in zip(r, widths, strict=True)
            ).rstrip()
        )
    return out
