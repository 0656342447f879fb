"""Live alerts (issue 19, part 1): the diagnosis corpus replayed flush by flush, as a recorder's writer
thread sees it, through AlertEngine. Healthy runs raise no warning; each fault alerts its rule at its
onset; each condition alerts once."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tests.diagnosis.corpus import faulty, healthy
from tmon_core import events as ev
from tmon_core.alerts import Alert, AlertEngine

FLUSH_S = 1.0  # the recorder's default flush interval


def replay(spec, engine: AlertEngine) -> list[dict]:
    """Feed ``spec`` to ``engine`` one flush interval of wall time at a time, ticking after each."""
    n = spec.steps
    st = spec.series.get("step_time")
    if st is not None:
        walls = 1000.0 + np.cumsum(np.asarray(st) + np.asarray(spec.series.get("data_time", 0.0)))
    else:
        walls = 1000.0 + 0.01 * np.arange(1, n + 1)
    steps = np.arange(n)
    series = {k: np.asarray(v, float) for k, v in spec.series.items()}
    if spec.val:
        vs = np.array(sorted(spec.val))
        series["val_loss"] = (vs, np.array([spec.val[s] for s in vs]))
    events = sorted((walls[s], s, typ, msg) for s, typ, msg, _ in spec.events)
    samples = [(walls[s], s, h, gs) for s, h, gs in spec.samples]
    out = []
    t, lo = walls[0] - FLUSH_S, 0
    while lo < n or t < walls[-1]:
        t += FLUSH_S
        hi = int(np.searchsorted(walls, t, side="right"))
        points = {}
        for k, v in series.items():
            if isinstance(v, tuple):  # validation: its own steps
                inside = (v[0] >= lo) & (v[0] < hi)
                if inside.any():
                    points[k] = (v[0][inside], v[1][inside], walls[v[0][inside]])
            elif hi > lo:
                points[k] = (steps[lo:hi], v[lo:hi], walls[lo:hi])
        evs = [
            {"type": typ, "step": s, "wall_time": w, "message": m}
            for w, s, typ, m in events
            if t - FLUSH_S < w <= t
        ]
        hosts = [
            {**h, "step": s, "wall_time": w}
            for w, s, h, _ in samples
            if t - FLUSH_S < w <= t and h is not None
        ]
        gpus = [
            {**g, "step": s, "wall_time": w} for w, s, _, gs in samples if t - FLUSH_S < w <= t for g in gs
        ]
        out += engine.observe(points, evs, hosts, gpus)
        out += engine.tick(now=t)
        lo = hi
    out += engine.finish(ev.COMPLETED)
    return out


def test_healthy_runs_raise_no_warning():
    warned = []
    for i in range(60):
        spec = healthy(i)
        alerts = replay(spec, AlertEngine(clock=lambda: 0.0))
        loud = [a for a in alerts if a["level"] != "info"]
        if loud:
            warned.append((spec.name, [(a["rule"], a["title"]) for a in loud]))
        assert [a["rule"] for a in alerts if a["level"] == "info"] == ["finished"], spec.name
    assert len(warned) <= 1, warned  # the target: <= 2 % of healthy runs with a warning alert


@pytest.mark.parametrize(
    "fault,rule",
    [
        ("nonfinite", "nonfinite"),
        ("divergence", "divergence"),
        ("spikes", "spikes"),
        ("memory_gpu", "memory.gpu"),
        ("memory_host", "memory.host"),
        ("stall", "stall"),
    ],
)
def test_each_fault_alerts_its_rule_once(fault, rule):
    from tests.diagnosis.corpus import FAULTS

    index = list(FAULTS).index(fault)
    for i in range(index, index + 4 * len(FAULTS), len(FAULTS)):  # four runs of this fault
        spec = faulty(i)
        alerts = replay(
            spec, AlertEngine(clock=lambda: 0.0, stall_after_s=10.0)
        )  # the corpus' stalls: 20-120 s
        mine = [a for a in alerts if a["rule"] == rule]
        assert len(mine) >= 1, (spec.name, [(a["rule"], a["title"]) for a in alerts])
        once = {(a["rule"], a["level"], a["step"] if rule == "stall" else None) for a in mine}
        assert len(once) == len(mine), "a condition alerts once per level (a stall once per stall)"
        if fault == "nonfinite":
            assert mine[0]["step"] == spec.onset and mine[0]["level"] == "critical"
        if fault in ("divergence", "spikes"):
            assert abs(mine[0]["step"] - spec.onset) <= 0.05 * spec.steps or mine[0]["step"] >= spec.onset
        if fault == "stall":
            assert mine[0]["step"] < spec.onset + 1, "alerted while the stalled step was still waiting"


def test_no_stall_while_validation_runs_or_right_after_a_checkpoint():
    engine = AlertEngine(clock=lambda: 0.0, stall_after_s=10.0)
    steps = np.arange(100)
    engine.observe(
        {
            "step_time": (steps, np.full(100, 0.1), 10.0 + 0.1 * steps),
            "loss": (steps, np.ones(100), 10 + 0.1 * steps),
        }
    )
    last = 10.0 + 9.9
    assert engine.tick(now=last + 0.5) == []
    engine.observe(events=[{"type": ev.VALIDATION_START, "step": 99, "wall_time": last}])
    assert engine.tick(now=last + 300) == [], "validation is not a stall"
    engine.observe(events=[{"type": ev.VALIDATION_END, "step": 99, "wall_time": last + 300}])
    assert engine.tick(now=last + 300.5) == []
    engine.observe(events=[{"type": ev.CHECKPOINT, "step": 99, "wall_time": last + 400}])
    assert engine.tick(now=last + 400.5) == [], "the quiet before a checkpoint event was the save"
    stall = engine.tick(now=last + 420)
    assert [a["rule"] for a in stall] == ["stall"] and stall[0]["step"] == 99
    assert engine.tick(now=last + 500) == [], "one stall, one alert"
    engine.observe({"step_time": (np.array([100]), np.array([0.1]), np.array([last + 501]))})
    assert engine.tick(now=last + 530)[0]["rule"] == "stall", "a new stall after steps resumed alerts again"


def test_how_the_run_ended():
    assert AlertEngine().finish(ev.COMPLETED, step=5)[0]["level"] == "info"
    failed = AlertEngine().finish(ev.FAILED, {"type": "RuntimeError", "message": "CUDA error"}, step=7)[0]
    assert (failed["rule"], failed["level"]) == (
        "failed",
        "critical",
    ) and "RuntimeError: CUDA error" in failed["text"]
    assert AlertEngine(rules=["nonfinite"]).finish(ev.FAILED) == []


def test_a_users_rule_on_any_metric_alerts_once_per_excursion():
    engine = AlertEngine(rules=False, custom=[Alert("val_loss", above=2.0), Alert("grad_norm", zscore=4)])
    steps = np.arange(10)
    vals = np.array([1.0, 1.5, 2.5, 3.0, 1.0, 2.2, 1.0, 1.0, 1.0, 1.0])
    alerts = engine.observe({"val_loss": (steps, vals, steps * 1.0)})
    assert [(a["rule"], a["step"]) for a in alerts] == [("metric.val_loss", 2), ("metric.val_loss", 5)]
    rng = np.random.default_rng(0)
    g = np.abs(1 + 0.1 * rng.standard_normal(200))
    g[150] = 5.0
    alerts = engine.observe({"grad_norm": (np.arange(200), g, np.arange(200.0))})
    assert [(a["rule"], a["step"]) for a in alerts] == [("metric.grad_norm", 150)]


@pytest.mark.parametrize(
    "kwargs,needle",
    [
        (dict(key=""), "metric name"),
        (dict(key="x"), "above=, below= or zscore="),
        (dict(key="x", above=math.nan), "finite number"),
        (dict(key="x", zscore=-1), "zscore must be > 0"),
        (dict(key="x", above=1, below=2), "below= must be under above="),
        (dict(key="x", above=1, level="loud"), "level"),
    ],
)
def test_a_bad_rule_is_refused_with_what_was_expected(kwargs, needle):
    with pytest.raises(ValueError, match=needle):
        Alert(**kwargs)


def test_unknown_default_rule_names_the_rules():
    with pytest.raises(ValueError, match="nonfinite, divergence"):
        AlertEngine(rules=["nan"])
    with pytest.raises(TypeError, match="Alert"):
        AlertEngine(custom=[("loss", 2.0)])
