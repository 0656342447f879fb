"""The report's detectors measured like a classifier: a slice of the labelled corpus of
bench/diagnosis.py (tests/diagnosis/) with the benchmark's targets, so a change that makes the report
noisy, or blind, fails here; the incremental detectors give the whole run's answer; advice that knows
what the run already had; library notices apart from the run's problems."""

import math

import numpy as np
import pytest

import tmon_core
from tests.diagnosis.corpus import FAULTS, faulty, healthy
from tests.diagnosis.score import judge, score
from tests.reportkit import build_run, by_rule, decaying, event, log
from tmon_core import events as ev
from tmon_core.analysis.detect import GradDetector, LossDetector, OverfitDetector
from tmon_core.analysis.detect.hardware import HOST_COLUMNS, GpuMemory, HostMemory
from tmon_core.analysis.detect.throughput import RunningMedian, StepTimes

PL_CFG = {
    "framework": "lightning.pytorch",
    "precision": "32-true",
    "accumulate_grad_batches": 1,
    "gradient_clip_val": None,
    "batch_size": 64,
    "num_workers": 2,
    "world_size": 1,
    "optimizers": [{"class": "AdamW", "defaults": {"lr": 1e-3, "weight_decay": 0.0}}],
    "model_class": "my.models.Classifier",
}


# ---------------------------------------------------------------------------- the corpus slice
def test_healthy_runs_of_every_shape_and_noise_are_rated_good(store_url):
    rows = judge([healthy(i) for i in range(14)], store_url)
    sc = score(rows)
    # the benchmark's target is <= 2 % over its 200 runs: none of this slice
    assert sc["healthy_not_good"] == [], [
        (s.name, s.noise, [(f.rule, f.severity) for f in r.findings]) for s, r in rows if r.health != "good"
    ]
    noises = {s.noise.split(",")[1].split()[0] for s, _ in rows}
    assert {"lognormal", "student-t", "bimodal"} <= noises


def test_every_fault_is_found_by_its_rule_at_its_onset(store_url):
    specs = [faulty(i) for i in range(len(FAULTS))]
    assert {s.fault for s in specs} == set(FAULTS)
    sc = score(judge(specs, store_url))
    missed = {rule: v["missed"] for rule, v in sc["rules"].items() if v["missed"]}
    assert sc["found_total"] >= 0.95 * len(specs), missed
    for rule, v in sc["rules"].items():
        for err, name, exact in v["onset_errors"]:
            assert err <= 0.05, (rule, name, err)
            if rule == "stability.nonfinite":
                assert exact, name


# ---------------------------------------------------------------------------- incremental == whole
def _chunks(n, rng):
    pos = 0
    while pos < n:
        k = int(rng.integers(1, 400))
        yield slice(pos, pos + k)
        pos += k


@pytest.mark.parametrize("make,count", [(healthy, 30), (faulty, 36)])
def test_the_detectors_fed_step_by_step_say_what_they_say_on_the_whole_run(make, count):
    rng = np.random.default_rng(0)
    for i in range(count):
        spec = make(i)
        steps = np.arange(spec.steps)
        loss = np.asarray(spec.series["loss"], float)
        whole, inc = LossDetector(), LossDetector()
        whole.update(steps, loss)
        for sl in _chunks(spec.steps, rng):
            inc.update(steps[sl], loss[sl])
        assert repr(inc.result()) == repr(whole.result()), spec.name
        if "grad_norm" in spec.series:
            g = np.asarray(spec.series["grad_norm"], float)
            gw, gi = GradDetector(), GradDetector()
            gw.update(steps, g)
            for sl in _chunks(spec.steps, rng):
                gi.update(steps[sl], g[sl])
            assert repr(gi.result()) == repr(gw.result()), spec.name
        if spec.val:
            vs = np.array(sorted(spec.val))
            vv = np.array([spec.val[s] for s in vs])
            ow, oi = OverfitDetector(), OverfitDetector()
            ow.update_train(steps, loss)
            ow.update(vs, vv)
            for sl in _chunks(spec.steps, rng):
                oi.update_train(steps[sl], loss[sl])
                inside = (vs >= sl.start) & (vs < sl.stop)
                oi.update(vs[inside], vv[inside])
            assert repr(oi.result()) == repr(ow.result()), spec.name


def test_a_finding_says_how_sure_it_is_and_keeps_its_evidence(store_url):
    spec = faulty(list(FAULTS).index("spikes"))
    (spec_row,) = judge([spec], store_url)
    (f,) = by_rule(spec_row[1], "stability.spikes")
    assert 0.5 <= f.confidence <= 1 and f.step == spec.onset
    e = f.evidence
    assert (
        e["worst_sigmas"] > e["threshold_sigmas"]
        and e["worst_vs_median"] >= 2
        and e["steps"][0] == spec.onset
    )


# ---------------------------------------------------------------------------- the false alarms
def test_start_of_training_jump_and_noisy_small_batches_are_not_spikes(store_url):
    rng = np.random.default_rng(7)
    n = 400
    loss = (0.08 + 0.3 * np.exp(-np.arange(n) / 60)) * np.exp(0.5 * rng.standard_normal(n))
    loss[:3] = [0.36, 1.07, 0.23]  # Adam at lr 1e-2 on Lightning's autoencoder example
    rid = build_run(store_url, config=PL_CFG, steps=n, series={"loss": loss.tolist(), "lr": [1e-2] * n})
    r = tmon_core.report(rid, store=store_url)
    assert r.health == "good", str(r)
    assert not [x for x in r.recommendations if "gradient_clip" in (x.config_path or "")]


def test_a_still_falling_noisy_curve_is_not_a_plateau(store_url):
    rng = np.random.default_rng(3)
    n = 2000
    loss = (0.2 + 2.0 * np.exp(-np.arange(n) / 900)) * np.exp(0.5 * rng.standard_normal(n))
    rid = build_run(store_url, config=PL_CFG, steps=n, series={"loss": loss.tolist(), "lr": [1e-3] * n})
    r = tmon_core.report(rid, store=store_url)
    assert not by_rule(r, "stability.plateau") and not by_rule(r, "stability.spikes") and r.health == "good"


# ---------------------------------------------------------------------------- advice that knows the run
def _overfit_run(
    store_url, tmp_path, callbacks=None, reason=None, framework="lightning", config=PL_CFG, checkpoints=True
):
    vals = {
        s: v
        for s, v in zip(
            range(15, 300, 16),
            [
                1.0,
                0.8,
                0.66,
                0.58,
                0.52,
                0.49,
                0.477,
                0.47,
                0.4571,
                0.49,
                0.53,
                0.58,
                0.62,
                0.66,
                0.7,
                0.74,
                0.78,
                0.8,
            ],
        )
    }
    at = {}
    for s in (
        vals if checkpoints else ()
    ):  # Lightning writes the checkpoint at the step after the validation it saves
        path = tmp_path / f"epoch={s // 16}-step={s + 1}.ckpt"
        path.write_bytes(b"x")
        at.setdefault(s + 1, []).append(
            lambda rec, p=path, s=s: rec.checkpoint(p, step=s + 1, monitor="val_loss", monitor_value=vals[s])
        )
    if reason:
        at.setdefault(None, []).append(
            event(ev.TRAIN_END, 299, reason=reason, callback="EarlyStopping", monitor="val_loss", patience=3)
        )
    cfg = config | ({ev.CONFIG_CALLBACKS: callbacks} if callbacks is not None else {})
    return build_run(
        store_url,
        framework=framework,
        config=cfg,
        steps=300,
        series={"loss": decaying(300, 2.0, 0.05), "val_loss": vals},
        at=at,
    )


def test_overfitting_names_the_raw_best_and_its_checkpoint_one_step_later(store_url, tmp_path):
    rid = _overfit_run(store_url, tmp_path)
    r = tmon_core.report(rid, store=store_url)
    (f,) = by_rule(r, "stability.overfitting")
    best = r.summary["best"]["val_loss"]
    assert (
        (f.evidence["best_step"], f.evidence["best_value"]) == (best["step"], best["value"]) == (143, 0.4571)
    )
    keep = [x for x in r.recommendations if "load_from_checkpoint" in (x.config_path or "")]
    assert keep and keep[0].recommended_value.endswith("epoch=8-step=144.ckpt")
    assert not [x for x in r.recommendations if "ModelCheckpoint" in (x.config_path or "")]
    es = [x for x in r.recommendations if "EarlyStopping" in (x.config_path or "")]
    assert (
        es and es[0].code == 'Trainer(callbacks=[EarlyStopping(monitor="val_loss", patience=2)])'
    )  # none: add it


def test_a_run_that_early_stopping_stopped_is_told_to_lower_its_patience_not_to_add_it(store_url, tmp_path):
    cbs = [
        {"name": "EarlyStopping", "monitor": "val_loss", "mode": "min", "patience": 3, "min_delta": 0.0},
        {"name": "ModelCheckpoint", "monitor": "val_loss", "mode": "min", "save_top_k": 2, "save_last": True},
    ]
    r = tmon_core.report(_overfit_run(store_url, tmp_path, cbs, ev.END_EARLY_STOPPING), store=store_url)
    (es,) = [x for x in r.recommendations if "EarlyStopping" in (x.config_path or "")]
    assert es.action.startswith("Lower patience from 3 to 2") and (
        es.current_value,
        es.recommended_value,
    ) == (3, 2)
    assert not [x for x in r.recommendations if "ModelCheckpoint" in (x.config_path or "")]
    (f,) = by_rule(r, "stability.overfitting")
    assert f.evidence["early_stopping"]["stopped_the_run"] is True

    cbs[0]["patience"] = 2  # it has what the advice would say: nothing to add
    r = tmon_core.report(_overfit_run(store_url, tmp_path, cbs, ev.END_EARLY_STOPPING), store=store_url)
    assert by_rule(r, "stability.overfitting")
    assert not [x for x in r.recommendations if "EarlyStopping" in (x.config_path or "")]


def test_an_hf_run_that_loads_its_best_model_is_not_told_to_keep_the_best(store_url, tmp_path):
    cfg = {
        "framework": "transformers",
        "per_device_train_batch_size": 32,
        "optimizers": [{"class": "AdamW"}],
        "training_args": {"learning_rate": 5e-5, "weight_decay": 0.0},
    }
    hf = _overfit_run(store_url, tmp_path, framework="hf", config=cfg, checkpoints=False)
    keep = "Keep the checkpoint with the best val_loss"
    assert [x.code for x in tmon_core.report(hf, store=store_url).recommendations if x.title == keep] == [
        'TrainingArguments(load_best_model_at_end=True, metric_for_best_model="val_loss")'
    ]
    cfg["training_args"]["load_best_model_at_end"] = True
    hf = _overfit_run(store_url, tmp_path, framework="hf", config=cfg, checkpoints=False)
    r = tmon_core.report(hf, store=store_url)
    assert by_rule(r, "stability.overfitting")
    assert not [x for x in r.recommendations if x.title == keep]


# ---------------------------------------------------------------------------- library notices
def test_library_deprecations_are_notices_apart_from_the_runs_warnings_and_errors(store_url):
    site = "/opt/venv/lib/python3.11/site-packages/somelib/core.py"
    at = {
        10: [
            log(
                "WARNING",
                f"FutureWarning: `foo` is deprecated and will be removed ({site}:12)",
                source="warnings",
                logger="builtins.FutureWarning",
            ),
            log(
                "WARNING",
                f"LightningDeprecationWarning: the `bar` hook is deprecated ({site}:40)",
                source="warnings",
                logger="lightning.LightningDeprecationWarning",
            ),
        ],
        20: [
            log(
                "WARNING",
                "FutureWarning: my own helper is deprecated (/home/me/train.py:7)",
                source="warnings",
                logger="builtins.FutureWarning",
            ),
            log("ERROR", "could not save the sample images", logger="user"),
        ],
    }
    rid = build_run(store_url, config=PL_CFG, steps=50, series={"loss": decaying(50)}, at=at)
    r = tmon_core.report(rid, store=store_url)
    assert [e["message"][:14] for e in r.library_notices] == ["FutureWarning:", "LightningDepre"]
    cats = {e["message"].split(":")[0]: e["category"] for e in r.log_errors}
    assert cats == {"FutureWarning": "warning", "could not save the sample images": "error"}
    assert r.summary["counts"]["library_notices"] == 2 and r.summary["counts"]["log_warnings"] == 1
    assert r.summary["counts"]["log_errors"] == 1 and by_rule(r, "logs.errors")  # the user's error stays
    text = str(r)
    assert "Library notices (2)" in text and text.index("Log errors and warnings (2)") < text.index(
        "Library notices"
    )
    assert tmon_core.analysis.Report.from_json(r.to_json()).library_notices == r.library_notices


def test_library_notices_alone_leave_a_healthy_run_good(store_url):
    site = "/usr/lib/python3/dist-packages/otherlib/api.py"
    at = {
        5: [
            log(
                "WARNING",
                f"DeprecationWarning: nan handling will change ({site}:3)",
                source="warnings",
                logger="builtins.DeprecationWarning",
            )
        ]
    }
    rid = build_run(store_url, config=PL_CFG, steps=50, series={"loss": decaying(50)}, at=at)
    r = tmon_core.report(rid, store=store_url)
    assert r.health == "good" and not r.findings and len(r.library_notices) == 1 and not r.log_errors


@pytest.mark.parametrize("make,count", [(healthy, 30), (faulty, 60)])
def test_step_time_and_memory_detectors_fed_in_pieces_say_what_they_say_on_the_whole_run(make, count):
    rng = np.random.default_rng(1)
    seen = set()
    for i in range(count):
        spec = make(i)
        steps = np.arange(spec.steps)
        if "step_time" in spec.series:
            st = np.asarray(spec.series["step_time"], float)
            dt = np.asarray(spec.series.get("data_time", np.full(spec.steps, np.nan)), float)
            walls = np.cumsum(st)
            whole, inc = StepTimes(), StepTimes()
            whole.update(steps, st, dt, walls)
            for sl in _chunks(spec.steps, rng):
                inc.update(steps[sl], st[sl], dt[sl], walls[sl])
            bounds = [e[0] for e in spec.events]
            for a, b in (
                (inc.stalls(bounds), whole.stalls(bounds)),
                (inc.input_share(), whole.input_share()),
            ):
                assert repr(a) == repr(b) or (a is not None and _close(a, b)), spec.name
            seen.add("stalls" if whole.stalls(bounds) else "no stalls")
            seen.add("input-bound" if (whole.input_share() or {}).get("bound") else "not input-bound")
        hosts = [(s, h) for s, h, _ in spec.samples if h is not None]
        if hosts:
            cols = {
                k: np.array([float(h.get(k, np.nan)) for _, h in hosts]) for k in HOST_COLUMNS if k != "step"
            }
            cols["step"] = np.array([float(s) for s, _ in hosts])
            whole, inc = HostMemory(), HostMemory()
            whole.update(cols)
            for j in range(len(hosts)):
                inc.update({k: v[j : j + 1] for k, v in cols.items()})
            assert _close(inc.peak(), whole.peak()) and repr(inc.level()) == repr(whole.level()), spec.name
            seen.add("host warning" if whole.level() else "host fine")
        gpus = [(s, g) for s, _, gs in spec.samples for g in gs]
        if gpus:
            col = lambda k, gpus=gpus: np.array([float(g[k]) for _, g in gpus])  # noqa: E731
            args = (col("mem_used"), col("mem_total"), np.arange(len(gpus), dtype=float))
            kw = dict(torch_max_allocated=col("torch_max_allocated"), util_percent=col("util_percent"))
            whole, inc = GpuMemory(), GpuMemory()
            whole.update(*args, **kw, step=np.array([float(s) for s, _ in gpus]))
            for j in range(len(gpus)):
                inc.update(
                    *(a[j : j + 1] for a in args),
                    **{k: v[j : j + 1] for k, v in kw.items()},
                    step=np.array([float(gpus[j][0])]),
                )
            assert _close(inc.peak(), whole.peak()) and repr(inc.level()) == repr(whole.level()), spec.name
            seen.add("gpu warning" if whole.level() else "gpu fine")
    if make is faulty:  # the slice holds both outcomes of every detector, or the test proves little
        assert {
            "stalls",
            "no stalls",
            "input-bound",
            "not input-bound",
            "host warning",
            "gpu warning",
        } <= seen, seen


def _close(a, b) -> bool:
    """Equal, but for sums and means taken in another order (last bits of a float)."""
    a = a.evidence if hasattr(a, "evidence") else a
    b = b.evidence if hasattr(b, "evidence") else b
    if a.keys() != b.keys():
        return False
    return all(
        x == y
        or (
            isinstance(x, float)
            and isinstance(y, float)
            and (math.isclose(x, y, rel_tol=1e-9) or (math.isnan(x) and math.isnan(y)))
        )
        for x, y in ((a[k], b[k]) for k in a)
    )


def test_the_running_median_is_numpys_median():
    rng = np.random.default_rng(2)
    med = RunningMedian()
    values = rng.lognormal(0, 1, 1001)
    for k in (1, 2, 3, 10, 501, 1000, 1001):
        med = RunningMedian()
        med.extend(values[:k].tolist())
        assert med.value() == np.median(values[:k])
