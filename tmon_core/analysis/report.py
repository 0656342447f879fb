"""The ``Report``: a run's health, summary, findings, ranked recommendations and log errors, computed
from the store alone (any run: completed, failed, interrupted, running or lost), saved in
``tmon_reports``, readable as text, as an HTML card in a notebook, and as JSON."""

from __future__ import annotations

import json
import math
import time
from typing import Any

import numpy as np

from .. import keys as K
from .model import RANK, Finding, Recommendation, Thresholds, health_of
from .rules.logs import LIBRARY

VERSION = 1
_OWN_KEYS = (K.LR, K.MOMENTUM, K.WEIGHT_DECAY, K.STEP_TIME, K.DATA_TIME, K.GRAD_NORM, K.EPOCH)
_MIN_WORDS = ("loss", "err", "perplexity", "ppl", "mae", "mse", "rmse", "wer", "cer")
_MAX_WORDS = ("acc", "f1", "auc", "precision", "recall", "score", "map", "bleu", "rouge", "iou", "dice")


def json_safe(v: Any) -> Any:
    """Plain JSON types: numpy scalars unwrapped, NaN/inf as the strings "nan"/"inf"/"-inf" (as
    ``tmon export`` writes them), tuples as lists, unknown objects as their text."""
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (int, np.integer)) and not isinstance(v, bool):
        return int(v)
    if isinstance(v, (float, np.floating)):
        f = float(v)
        return f if math.isfinite(f) else str(f)
    if isinstance(v, dict):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, np.ndarray)):
        return [json_safe(x) for x in v]
    if isinstance(v, np.bool_):
        return bool(v)
    try:
        import pandas as pd

        if v is pd.NA or v is pd.NaT:
            return None
    except ImportError:  # pragma: no cover
        pass
    return str(v)


class Report:
    """What tmon makes of one run.

    >>> r = tmon_core.report()                    # doctest: +SKIP
    >>> r.health, r.recommendations[0].action     # doctest: +SKIP
    """

    def __init__(
        self,
        run_id: str,
        health: str,
        summary: dict,
        findings: list[Finding],
        recommendations: list[Recommendation],
        log_errors: list[dict],
        *,
        created_at: float | None = None,
        thresholds: dict | None = None,
        version: int = VERSION,
        library_notices: list[dict] | None = None,
    ):
        self.run_id = run_id
        self.health = health
        self.summary = summary
        self.findings = findings
        self.recommendations = recommendations
        self.log_errors = log_errors
        #: deprecation / future warnings from inside installed packages: apart from the run's own problems
        self.library_notices = library_notices or []
        self.created_at = created_at if created_at is not None else time.time()
        self.thresholds = thresholds or {}
        self.version = version

    # ------------------------------------------------------------------ structured forms
    def to_dict(self) -> dict:
        return {
            "version": self.version,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "health": self.health,
            "summary": self.summary,
            "findings": [f.to_dict() for f in self.findings],
            "recommendations": [r.to_dict() for r in self.recommendations],
            "log_errors": self.log_errors,
            "library_notices": self.library_notices,
            "thresholds": self.thresholds,
        }

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(json_safe(self.to_dict()), indent=indent, allow_nan=False)

    @classmethod
    def from_dict(cls, d: dict) -> Report:
        return cls(
            d["run_id"],
            d["health"],
            d.get("summary") or {},
            [Finding(**f) for f in d.get("findings") or []],
            [Recommendation(**r) for r in d.get("recommendations") or []],
            d.get("log_errors") or [],
            created_at=d.get("created_at"),
            thresholds=d.get("thresholds"),
            version=d.get("version", VERSION),
            library_notices=d.get("library_notices") or [],
        )

    @classmethod
    def from_json(cls, text: str) -> Report:
        return cls.from_dict(json.loads(text))

    # ------------------------------------------------------------------ readable forms
    def __repr__(self) -> str:
        return (
            f"Report(run={self.run_id!r}, health={self.health!r}, {len(self.findings)} findings, "
            f"{len(self.recommendations)} recommendations, {len(self.log_errors)} log errors)"
        )

    def __str__(self) -> str:
        from .render import text

        return text(self)

    def _repr_html_(self) -> str:
        from .render import html

        return html(self)


# ---------------------------------------------------------------------------- building one
def build(run, thresholds: Thresholds) -> Report:
    from .data import RunData
    from .rules import run_all

    d = RunData(run, thresholds)
    findings, recs = run_all(d)
    findings = sorted(findings, key=lambda f: RANK.get(f.severity, 9))
    recs = rank(recs)
    summary = summarize(d, findings)
    summary["counts"]["recommendations"] = len(recs)
    log_errors = [e for e in d.log_entries if e["category"] != LIBRARY]
    notices = [e for e in d.log_entries if e["category"] == LIBRARY]
    return Report(
        run.id,
        health_of(findings),
        json_safe(summary),
        [Finding(**json_safe(f.to_dict())) for f in findings],
        [Recommendation(**json_safe(r.to_dict())) for r in recs],
        json_safe(log_errors),
        thresholds=json_safe(thresholds.__dict__),
        library_notices=json_safe(notices),
    )


def rank(recs: list[Recommendation]) -> list[Recommendation]:
    """Most severe first; within a severity, each rule's advice together (the rule whose first advice
    ranks highest first), in its own order; one recommendation per setting (the most severe kept,
    the rules that also asked for it listed in its evidence)."""
    lead: dict[tuple, tuple] = {}
    for i, r in enumerate(recs):
        key = (RANK.get(r.severity, 9), r.rule)
        lead[key] = min(lead.get(key, (r.priority, i)), (r.priority, i))
    order = sorted(
        range(len(recs)),
        key=lambda i: (
            RANK.get(recs[i].severity, 9),
            lead[(RANK.get(recs[i].severity, 9), recs[i].rule)],
            recs[i].priority,
            i,
        ),
    )
    kept: dict[str, Recommendation] = {}
    out = []
    for i in order:
        r = recs[i]
        key = r.config_path or r.title
        if key in kept:
            first = kept[key]
            also = first.evidence.setdefault("also_from", [])
            if r.rule != first.rule and r.rule not in also:
                also.append(r.rule)
            continue
        kept[key] = r
        out.append(r)
    return out


def summarize(d, findings: list[Finding]) -> dict:
    info = d.info
    h = d.host_peak
    memory: dict[str, Any] = {}
    if h is not None:
        growth = (
            h["swap_peak_bytes"] - h["swap_start_bytes"]
            if h["swap_peak_bytes"] is not None and h["swap_start_bytes"] is not None
            else None
        )
        memory.update(
            {
                "host_peak_bytes": h["ram_used_bytes"],
                "host_total_bytes": h["ram_total_bytes"],
                "host_peak_fraction": h["fraction"],
                "swap_peak_bytes": h["swap_peak_bytes"],
                "swap_growth_bytes": growth,
                "process_peak_rss_bytes": h["peak_proc_rss_bytes"],
                "workers_peak_rss_bytes": h["peak_workers_rss_bytes"],
                "workers": h["max_workers"],
                "cpu_mean_percent": h["cpu_mean_percent"],
            }
        )
    memory["gpus"] = [
        {
            k: p[k]
            for k in (
                "gpu",
                "name",
                "host",
                "peak_mem_bytes",
                "mem_total_bytes",
                "peak_fraction",
                "torch_peak_allocated_bytes",
                "mean_util_percent",
            )
        }
        for p in d.gpu_peaks
    ]
    g = d.gpu_peak
    memory["gpu_peak_fraction"] = g["peak_fraction"] if g else None
    err = d.failure
    counts = {s: sum(1 for f in findings if f.severity == s) for s in ("critical", "warning", "info")}
    logs = d.log_entries
    return {
        "run_id": info["id"],
        "name": info["name"],
        "framework": d.framework,
        "status": d.status,
        "started_at": info["created_at"],
        "ended_at": info.get("ended_at"),
        "duration_s": d.duration,
        "steps": d.steps_done,
        "total_steps": info.get("total_steps"),
        "host": info.get("host"),
        "error": {"type": err.get("type"), "message": (err.get("message") or "")[:1000]} if err else None,
        "dropped_points": info.get("dropped_points") or 0,
        "memory": memory,
        "throughput": _throughput(d),
        "best": _best(d),
        "config": {
            "batch_size": d.batch_size,
            "accumulation": d.accumulation,
            "precision": d.precision,
            "num_workers": d.num_workers,
            "world_size": d.config.get("world_size"),
        },
        "counts": {
            "findings": counts,
            "recommendations": None,
            "log_errors": sum(e["count"] for e in logs if e["category"] not in ("warning", "tmon", LIBRARY)),
            "log_warnings": sum(e["count"] for e in logs if e["category"] == "warning"),
            "library_notices": sum(e["count"] for e in logs if e["category"] == LIBRARY),
        },
    }


def _throughput(d) -> dict:
    out: dict[str, Any] = {}
    tm = d.timing
    if tm is not None:
        st = tm["step_time"][np.isfinite(tm["step_time"])]
        dt = tm["data_time"][np.isfinite(tm["data_time"])]
        out["median_step_s"] = float(np.median(st)) if len(st) else None
        out["median_data_s"] = float(np.median(dt)) if len(dt) else None
        both = np.isfinite(tm["step_time"]) & np.isfinite(tm["data_time"])
        if both.sum():
            out["data_share"] = float(
                tm["data_time"][both].sum()
                / max(1e-12, (tm["data_time"][both] + tm["step_time"][both]).sum())
            )
    loss = d.loss
    if loss is not None and len(loss) >= 2 and loss.walls[-1] > loss.walls[0]:
        sps = float((loss.steps[-1] - loss.steps[0]) / (loss.walls[-1] - loss.walls[0]))
        out["steps_per_s"] = sps
        if d.batch_size:
            world = d.config.get("world_size") if isinstance(d.config.get("world_size"), int) else 1
            out["samples_per_s"] = sps * d.batch_size * d.accumulation * max(1, world)
    return out


def _best(d) -> dict:
    out = {}
    keys = sorted(k for k in d.keys if not any(k == o or k.startswith(o + "/") for o in _OWN_KEYS))
    for key in keys[:40]:
        low = key.lower()
        mode = (
            "min"
            if any(w in low for w in _MIN_WORDS)
            else "max"
            if any(w in low for w in _MAX_WORDS)
            else None
        )
        if mode is None:
            continue
        s = d.loss if d.loss is not None and key == d.loss.key else d.series(key)
        if s is None:
            continue
        f = s.finite()
        if not len(f):
            continue
        i = int(np.argmin(f.values) if mode == "min" else np.argmax(f.values))
        out[key] = {
            "value": float(f.values[i]),
            "step": int(f.steps[i]),
            "mode": mode,
            "last": float(f.values[-1]),
        }
        if len(out) >= 20:
            break
    return out


# ---------------------------------------------------------------------------- the store
def save(store, report: Report) -> int:
    from ..store.reports import save_report

    return save_report(store, report.run_id, report.created_at, report.health, report.to_json())


def load_latest(store, run_id: str) -> Report | None:
    from ..store.reports import latest_report_body

    body = latest_report_body(store, run_id)
    return Report.from_json(body) if body else None
