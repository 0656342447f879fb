"""The group report: what a sweep's trials (the runs of one group) say together.

>>> gr = tmon_core.group_report("sweep-3")                      # doctest: +SKIP  (judged by val_loss)
>>> gr = tmon_core.group_report("sweep-3", metric="val_acc")    # doctest: +SKIP  (mode "max" from the name)
>>> gr.best                    # doctest: +SKIP  the best trial: run, name, value, step, its settings
>>> gr.trials                  # doctest: +SKIP  DataFrame: a row per trial, a column per setting that varied
>>> gr.correlations            # doctest: +SKIP  which settings went with a better outcome
>>> gr.problems                # doctest: +SKIP  trials that failed, went NaN, diverged or stalled, and why
>>> print(gr); gr.to_json()    # doctest: +SKIP

How it is made, and why:

* **Settings** are what each trial recorded as its configuration: the user's hyperparameters
  (``config["hparams"]``: Lightning's ``save_hyperparameters``, ``track(config=...)``, a Ray trial's
  config), HF's ``TrainingArguments`` (``args.*``), the datamodule's (``data.*``) and the fit's own
  settings tmon records (batch size, precision...), nested dicts flattened with dots. A setting
  that varies between trials is a column of the trials table; one that is the same in every trial is
  said once (``shared``). Nothing is asked of the user: what a run recorded is what is compared.
* **Outcome**: each trial's best value of ``metric`` (lowest for ``mode="min"``), NaN points skipped;
  a trial that never recorded a finite value has none (and is left out of the correlations).
* **What goes with the outcome**: for a numeric setting, Spearman's rank correlation with the
  outcome over the trials that have both (rank-based: ``lr`` on a log scale reads the same); for a
  categorical one (text, booleans, a few numbers), the mean outcome per value and the value that did
  best. Fewer than ``MIN_TRIALS`` (4) trials with an outcome: "too few trials", no figure (with three
  points a rank correlation of 1 happens by chance one time in three).
* **Problems** are each trial's own report (``tmon_core.report``: the same detectors, no second
  one): the findings that say it failed, was lost or interrupted, went NaN/inf, diverged, stalled,
  or never improved. A report saved after the trial ended is reused; otherwise it is made (and saved
  with the trial unless ``save=False``).
"""

from __future__ import annotations

import html
import json
import math
import time
from typing import Any

from .report import _MAX_WORDS, _MIN_WORDS, json_safe

#: fewer trials with an outcome than this: no correlation is reported ("too few trials")
MIN_TRIALS = 4
#: the metrics a group is judged by when none is named: the first one its trials recorded
DEFAULT_METRICS = ("val_loss", "eval_loss", "loss", "train_loss")
#: a numeric setting with at most this many distinct values among >= 2x as many trials is also
#: shown per value (a grid sweep over batch sizes 16/32/64 is read both ways)
_FEW_VALUES = 3

#: report rule -> the problem it names in the group report
PROBLEM_RULES = {
    "lifecycle.failed": "failed",
    "lifecycle.lost": "lost",
    "lifecycle.interrupted": "interrupted",
    "stability.nonfinite": "nan",
    "stability.divergence": "diverged",
    "stability.grad_explode": "diverged",
    "throughput.stalls": "stalled",
    "stability.no_progress": "no_progress",
}

#: the recorded fit settings compared as trial settings (besides hparams, HF's and the datamodule's)
_FIT_SETTINGS = (
    "batch_size",
    "accumulate_grad_batches",
    "precision",
    "max_epochs",
    "max_steps",
    "gradient_clip_val",
    "epochs",
    "per_device_train_batch_size",
    "gradient_accumulation_steps",
    "world_size",
)


def infer_mode(metric: str) -> str:
    """``"max"`` for a metric whose name says higher is better (acc, f1, auc...), else ``"min"``."""
    low = metric.lower()
    if any(w in low for w in _MAX_WORDS) and not any(w in low for w in _MIN_WORDS):
        return "max"
    return "min"


def last_value(run, metric: str) -> float | None:
    """The last recorded point of ``metric`` (NaN included: a trial that ended NaN says so), or None."""
    if metric not in run.metric_keys():
        return None
    tail = run.tail(metric, 1)
    return None if tail.empty else float(tail.value.iloc[-1])


def best_value(run, metric: str, mode: str = "min") -> tuple[float, int] | None:
    """``(value, step)`` of ``run``'s best finite point of ``metric`` (its first, on a tie), or None
    when it has none. Reads the min/max-preserving downsample, exact for the extremes."""
    if metric not in run.metric_keys():
        return None
    df = run.metrics(metric, max_points=4000)
    finite = df[df.value.map(lambda v: v == v and abs(v) != math.inf)]
    if finite.empty:
        return None
    i = finite.value.idxmin() if mode == "min" else finite.value.idxmax()
    return float(finite.value[i]), int(finite.step[i])


def settings_of(config: dict | None) -> dict[str, Any]:
    """A trial's settings, flattened (see the module notes): ``{"lr": 0.01, "args.learning_rate": ...}``."""
    config = config or {}
    out: dict[str, Any] = {}
    _flatten(config.get("hparams"), "", out)
    _flatten(config.get("datamodule_hparams"), "data.", out)
    args = config.get("training_args")
    if isinstance(args, dict):
        _flatten({k: v for k, v in args.items() if not _where(k)}, "args.", out)
    for k in _FIT_SETTINGS:
        if config.get(k) is not None and k not in out:
            out[k] = config[k]
    return out


def _where(key: str) -> bool:
    """An HF argument that says where a trial writes or who it is, not how it trains: a sweep gives
    each trial its own, and a column of them would hide the settings that did vary."""
    return key in ("output_dir", "logging_dir", "run_name", "resume_from_checkpoint") or key.startswith(
        ("hub_", "push_to_hub_")
    )


def _flatten(d, prefix: str, out: dict) -> None:
    if not isinstance(d, dict):
        return
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            _flatten(v, key + ".", out)
        elif isinstance(v, (list, tuple)):
            out[key] = json.dumps(v, default=str)  # compared as a value (a categorical setting)
        else:
            out[key] = v


def _numeric(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _spearman(x: list[float], y: list[float]) -> float | None:
    """Spearman's rank correlation (average ranks for ties); None when either side is constant."""
    import pandas as pd

    rx, ry = pd.Series(x).rank(), pd.Series(y).rank()
    if rx.nunique() < 2 or ry.nunique() < 2:
        return None
    return float(rx.corr(ry))


def _strength(rho: float) -> str:
    a = round(abs(rho), 2)  # as printed: -0.80 reads "strong", whatever the last bits say
    return "strong" if a >= 0.8 else "moderate" if a >= 0.5 else "weak"


def _fmt(v) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


class GroupReport:
    """What tmon makes of one group's trials (see the module notes)."""

    def __init__(self, doc: dict):
        self.doc = doc
        self.group: str = doc["group"]
        self.metric: str = doc["metric"]
        self.mode: str = doc["mode"]
        self.best: dict | None = doc["best"]
        self.correlations: list[dict] = doc["correlations"]
        self.problems: list[dict] = doc["problems"]
        self.shared: dict = doc["shared"]
        self.notes: list[str] = doc["notes"]

    @property
    def trials(self):
        """A DataFrame, best trial first: run, name, status, steps, the settings that varied, best
        (the trial's best ``metric``), best_step, problems."""
        import pandas as pd

        rows = []
        for t in self.doc["trials"]:
            row = {"run": t["run"], "name": t["name"], "status": t["status"], "steps": t["steps"]}
            row.update({k: t["settings"].get(k) for k in self.doc["varied"]})
            row.update({"best": t["best"], "best_step": t["best_step"], "problems": t["problems"]})
            rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict:
        return self.doc

    def to_json(self, indent: int | None = None) -> str:
        return json.dumps(json_safe(self.doc), indent=indent, allow_nan=False)

    def __repr__(self) -> str:
        best = f", best {self.best['name']!r}" if self.best else ""
        return (
            f"GroupReport({self.group!r}, {len(self.doc['trials'])} trials, {self.metric} {self.mode}{best})"
        )

    def __str__(self) -> str:
        d = self.doc
        counts = ", ".join(f"{n} {s}" for s, n in d["status_counts"].items())
        lines = [
            f"group {self.group}: {len(d['trials'])} trials ({counts}), judged by {self.metric} ({self.mode})"
        ]
        if self.best:
            b = self.best
            lines.append(
                f"best: {b['name']} ({b['run'][:8]}): {self.metric} {_fmt(b['value'])} at step {b['step']}"
                + (
                    f"  [{', '.join(f'{k}={_fmt(v)}' for k, v in b['settings'].items())}]"
                    if b["settings"]
                    else ""
                )
            )
            if b.get("problems"):  # its best point is real, but it did not hold
                lines.append(
                    f"  but it then {', '.join(b['problems'])} (its last {self.metric}: {_fmt(b['last'])}): "
                    "its best point is only as good as a checkpoint of it"
                )
        else:
            lines.append(f"best: none (no trial recorded a finite {self.metric})")
        lines.append("")
        head = ["TRIAL", "STATUS", "STEPS", *d["varied"], f"BEST {self.metric}", "PROBLEMS"]
        rows = [head]
        for t in d["trials"]:
            rows.append(
                [
                    f"{t['name']} ({t['run'][:8]})",
                    t["status"],
                    "-" if t["steps"] is None else str(t["steps"]),
                    *("-" if t["settings"].get(k) is None else _fmt(t["settings"][k]) for k in d["varied"]),
                    "-" if t["best"] is None else _fmt(t["best"]),
                    ", ".join(t["problems"]) or "-",
                ]
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
        lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
        if self.shared:  # the user's own settings first (they come first), at most a dozen
            same = [f"{k}={_fmt(v)}" for k, v in self.shared.items()]
            more = f" ... (+{len(same) - 12}: to_json() has them all)" if len(same) > 12 else ""
            lines.append("same in every trial: " + ", ".join(same[:12]) + more)
        lines += ["", f"what goes with a better {self.metric}:"]
        if not self.correlations:
            lines.append("  no setting varied between the trials")
        for c in self.correlations:
            lines.append(f"  {c['setting']}: {c['text']}")
        if self.problems:
            lines += ["", "problems:"]
            for p in self.problems:
                lines.append(f"  {p['name']} ({p['run'][:8]}): {p['kind']}: {p['title']}")
        for n in self.notes:
            lines.append(f"note: {n}")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        return f"<pre>{html.escape(str(self))}</pre>"


def group_report(
    group: str,
    metric: str | None = None,
    mode: str | None = None,
    *,
    store=None,
    save: bool = True,
) -> GroupReport:
    """The report of group ``group`` (its runs are its trials) in ``store`` (URL, path or ``Store``;
    default ``$TMON_STORE`` or ``sqlite:///tmon.db``).

    ``metric``: what a trial is judged by; default the first of ``val_loss``, ``eval_loss``,
    ``loss``, ``train_loss`` that the trials recorded. ``mode``: ``"min"`` or ``"max"``; default from
    the metric's name (``acc``, ``f1``, ``auc``... are maximised). ``save``: a trial report made here
    is saved with its trial (as ``tmon report`` does).
    """
    from ..store import Store, open_store

    if not isinstance(group, str) or not group:
        raise ValueError(f"group must be a group's name (a non-empty string), received group={group!r}")
    if metric is not None and (not isinstance(metric, str) or not metric):
        raise ValueError(f"metric must be a metric key such as 'val_loss', received metric={metric!r}")
    if mode is not None and mode not in ("min", "max"):
        raise ValueError(f"mode must be 'min' or 'max', received mode={mode!r}")
    own = not isinstance(store, Store)
    st = open_store(store) if own else store
    try:
        return _build(st, group, metric, mode, save)
    finally:
        if own:
            st.close()


def _trial_report(run, info: dict, save: bool):
    """The trial's own report: the saved one when it was made after the trial ended, else a new one
    (saved when ``save`` and the trial has ended)."""
    from . import Thresholds
    from .report import build, load_latest
    from .report import save as save_report

    if info["status"] != "running":
        saved = load_latest(run.store, run.id)
        end = info.get("ended_at") or info.get("heartbeat_at") or 0
        if saved is not None and saved.created_at >= end:
            return saved
    rep = build(run, Thresholds())
    if save and info["status"] != "running":  # a running trial's report is provisional: not kept
        save_report(run.store, rep)
    return rep


def _build(st, group: str, metric: str | None, mode: str | None, save: bool) -> GroupReport:
    runs = st.runs(group=group)
    if runs.empty:
        known = [g for g in st.runs().group.dropna().unique().tolist()][:20]
        raise KeyError(
            f"no runs in group {group!r} of {st}"
            + (f"; its groups: {', '.join(map(repr, known))}" if known else "; it has no groups")
        )
    runs = runs.iloc[::-1]  # oldest first: the order the trials started
    handles = [st.run(rid) for rid in runs.id]
    notes: list[str] = []
    keys_per_run = [set(r.metric_keys()) for r in handles]
    every_key = set().union(*keys_per_run)
    if metric is None:
        metric = next((m for m in DEFAULT_METRICS if m in every_key), None)
        if metric is None:
            raise KeyError(
                f"the trials of group {group!r} recorded none of {', '.join(DEFAULT_METRICS)}; name the "
                f"metric to judge them by (their metrics: {', '.join(sorted(every_key)[:30]) or 'none'})"
            )
    elif metric not in every_key:
        raise KeyError(
            f"no trial of group {group!r} recorded {metric!r}; their metrics: "
            f"{', '.join(sorted(every_key)[:30]) or 'none'}"
        )
    mode = mode or infer_mode(metric)
    trials = []
    for run, row in zip(handles, runs.to_dict("records")):
        info = run.info()
        b = best_value(run, metric, mode)
        problems, details = [], []
        try:
            rep = _trial_report(run, info, save)
            for f in rep.findings:
                kind = PROBLEM_RULES.get(f.rule)
                if kind is not None:
                    details.append(
                        {"kind": kind, "rule": f.rule, "title": f.title, "step": f.step, "detail": f.detail}
                    )
                    if kind not in problems:
                        problems.append(kind)
            health = rep.health
        except Exception as exc:  # one trial's report must not cost the group's
            health = None
            notes.append(
                f"trial {row['name']} ({run.id[:8]}): its report failed ({type(exc).__name__}: {exc})"
            )
        trials.append(
            {
                "run": run.id,
                "name": row["name"],
                "status": info["status"],
                "steps": info["steps"],
                "duration": float(row["duration"]) if row["duration"] == row["duration"] else None,
                "settings": settings_of(info["config"]),
                "best": None if b is None else b[0],
                "best_step": None if b is None else b[1],
                "last": last_value(run, metric),
                "health": health,
                "problems": problems,
                "problem_details": details,
            }
        )
    # the settings that varied between trials, and those the same in every one
    names: list[str] = []
    for t in trials:
        names += [k for k in t["settings"] if k not in names]
    varied, shared = [], {}
    for k in names:
        values = [json.dumps(t["settings"].get(k), sort_keys=True, default=str) for t in trials]
        if len(set(values)) > 1:
            varied.append(k)
        else:
            shared[k] = trials[0]["settings"].get(k)
    sign = 1 if mode == "min" else -1
    scored = [t for t in trials if t["best"] is not None]
    best_t = min(scored, key=lambda t: sign * t["best"]) if scored else None
    best = None
    if best_t is not None:
        best = {
            "run": best_t["run"],
            "name": best_t["name"],
            "value": best_t["best"],
            "step": best_t["best_step"],
            "settings": {k: best_t["settings"].get(k) for k in varied},
            "last": best_t["last"],
            "problems": best_t["problems"],
        }
    correlations = [_relation(k, scored, metric, mode) for k in varied]
    left_out = [t for t in trials if t["best"] is None]
    if left_out and correlations:
        names_out = ", ".join(
            f"{t['name']} ({', '.join(t['problems']) or t['status']})" for t in left_out[:5]
        )
        for c in correlations:
            if c.get("kind") != "too_few" and any(
                t["settings"].get(c["setting"]) is not None for t in left_out
            ):
                c["left_out"] = [t["run"] for t in left_out]
                c["text"] += f"; left out, without a {metric}: {names_out}"
    trials.sort(key=lambda t: (t["best"] is None, sign * t["best"] if t["best"] is not None else 0))
    problems = [{"run": t["run"], "name": t["name"], **p} for t in trials for p in t["problem_details"]]
    status_counts: dict[str, int] = {}
    for t in trials:
        status_counts[t["status"]] = status_counts.get(t["status"], 0) + 1
    missing = [t for t in trials if t["best"] is None]
    if missing:
        notes.append(
            f"{len(missing)} trial(s) recorded no finite {metric}: "
            + ", ".join(f"{t['name']} ({t['run'][:8]})" for t in missing[:10])
        )
    doc = {
        "group": group,
        "metric": metric,
        "mode": mode,
        "created_at": time.time(),
        "status_counts": status_counts,
        "best": best,
        "varied": varied,
        "shared": shared,
        "trials": trials,
        "correlations": correlations,
        "problems": problems,
        "notes": notes,
    }
    return GroupReport(json_safe(doc))


def _relation(setting: str, scored: list[dict], metric: str, mode: str) -> dict:
    """How ``setting`` went with the outcome over the trials with one (see the module notes)."""
    pairs = [
        (t["settings"].get(setting), t["best"]) for t in scored if t["settings"].get(setting) is not None
    ]
    out: dict[str, Any] = {"setting": setting, "trials": len(pairs)}
    better = "lower" if mode == "min" else "higher"
    if len(pairs) < MIN_TRIALS:
        out.update(
            kind="too_few",
            text=f"too few trials ({len(pairs)} with a {metric} and a {setting}; {MIN_TRIALS} needed)",
        )
        return out
    numeric = all(_numeric(v) for v, _ in pairs)
    distinct = {json.dumps(v, sort_keys=True, default=str) for v, _ in pairs}
    if numeric and len(distinct) > 1:
        rho = _spearman([float(v) for v, _ in pairs], [y for _, y in pairs])
        if rho is None:
            out.update(kind="numeric", rho=None, text=f"no relation (every trial had the same {metric})")
            return out
        # rho > 0: larger setting, larger metric; better is the direction that moves the metric toward mode
        good = (rho < 0) if mode == "min" else (rho > 0)
        direction = "higher" if good else "lower"
        out.update(
            kind="numeric",
            rho=rho,
            strength=_strength(rho),
            better=direction if round(abs(rho), 2) >= 0.5 else None,
            text=(
                f"rank correlation {rho:+.2f} with {metric} over {len(pairs)} trials ({_strength(rho)})"
                + (
                    f": a {direction} {setting} went with a {better} {metric}"
                    if round(abs(rho), 2) >= 0.5
                    else ""
                )
            ),
        )
        if len(distinct) > _FEW_VALUES or len(pairs) < 2 * len(distinct):
            return out
    # categorical (or a numeric setting with a few values): the mean outcome per value
    per: dict[str, list] = {}
    shown: dict[str, Any] = {}
    for v, y in pairs:
        key = json.dumps(v, sort_keys=True, default=str)
        per.setdefault(key, []).append(y)
        shown[key] = v
    means = sorted(
        ({"value": shown[k], "mean": sum(ys) / len(ys), "trials": len(ys)} for k, ys in per.items()),
        key=lambda m: m["mean"] if mode == "min" else -m["mean"],
    )
    text = ", ".join(f"{_fmt(m['value'])}: {_fmt(m['mean'])} ({m['trials']})" for m in means)
    if out.get("kind") == "numeric":
        out["per_value"] = means
        out["text"] += f"; mean {metric} per value: {text}"
    else:
        out.update(
            kind="categorical",
            per_value=means,
            best_value=means[0]["value"],
            text=f"mean {metric} per value (trials): {text}; best: {_fmt(means[0]['value'])}",
        )
    return out


__all__ = [
    "DEFAULT_METRICS",
    "MIN_TRIALS",
    "GroupReport",
    "best_value",
    "group_report",
    "infer_mode",
    "settings_of",
]
