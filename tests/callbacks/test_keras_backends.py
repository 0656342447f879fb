"""TMonCallback on Keras' three training backends (issue 22): torch, TensorFlow and JAX.

Keras picks its backend once per process, at import, so each backend's fits run in a process of
their own (``tests/callbacks/keras_backend_fits.py``, one process per backend for all the cases:
the imports are paid once) and this module asserts on what a user would look at: the run in the
store, the files on disk, and the weights. TensorFlow (``tf.function``) and JAX (``jit``) compile
the step, which reads the optimizer's Python numbers and its schedule object only when traced: a
change is proven to reach that compiled step by its effect on the weights (a linear model under
SGD: each step's update is exactly lr × its gradient, computed here in numpy), not by reading the
optimizer back.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tests.callbacks.keras_backend_fits import BATCH, N, regression
from tests.e2e.parity.harness import AtReferenceSteps, Rule, compare, from_records, read_csv, read_run
from tmon_core import events as ev
from tmon_core import open_store

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CASES = (
    "record",
    "float_lr",
    "schedule_lr",
    "momentum",
    "rollback",
    "guard_rollback",
    "guard_skip",
    "guard_stop",
    "no_guard",
    "guard_schedule",
)
NEEDS = {"torch": "torch", "tensorflow": "tensorflow", "jax": "jax"}
COMPILED = {"torch": False, "tensorflow": True, "jax": True}  # what these fits run: torch eagerly


def _backend(name: str):
    missing = importlib.util.find_spec("keras") is None or importlib.util.find_spec(NEEDS[name]) is None
    if missing and os.environ.get("CI") == "true":  # make test installs them: CI must not skip quietly
        marks = []
    else:
        marks = [pytest.mark.skipif(missing, reason=f"keras or {NEEDS[name]} is not installed")]
    return pytest.param(name, id=name, marks=marks)


pytestmark = pytest.mark.slow  # a process per backend, with its framework's imports (TensorFlow: seconds)


def run_backend(backend: str, out, cases=CASES) -> dict:
    """Run ``cases`` of keras_backend_fits with ``KERAS_BACKEND=backend`` in a new process; its JSON."""
    env = {
        **os.environ,
        "KERAS_BACKEND": backend,
        "TF_CPP_MIN_LOG_LEVEL": "3",  # TensorFlow's start-up chatter
        "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
        "TMON_STORE": f"sqlite:///{out}/default.db",
    }
    proc = subprocess.run(
        [sys.executable, "-m", "tests.callbacks.keras_backend_fits", str(out), *cases],
        cwd=out,
        env=env,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert proc.returncode == 0, f"the {backend} fits failed:\n{proc.stderr[-4000:]}"
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module", params=[_backend(b) for b in ("torch", "tensorflow", "jax")])
def fits(request, tmp_path_factory):
    out = tmp_path_factory.mktemp(f"keras-{request.param}")
    result = run_backend(request.param, out, CASES + (("jax_state",) if request.param == "jax" else ()))
    assert result["backend"] == request.param
    result["url"] = f"sqlite:///{out}/tmon.db"
    result["out"] = out
    return result


def sgd_check(weights: dict, lrs: list[float], steps, n: int = N) -> list[str]:
    """For each step k in ``steps``: whether the weights moved by exactly ``lrs[k]`` × the gradient of
    the mse of batch k at the weights the step started from (a linear model, shuffle=False, ``n``
    samples). The steps where they did not, with the lr the move amounts to."""
    x, y = regression(n)
    bad = []
    for k in steps:
        (w0, b0), (w1, b1) = (
            [np.array(a) for a in weights[str(k)]],
            [np.array(a) for a in weights[str(k + 1)]],
        )
        i = (k % (n // BATCH)) * BATCH
        xb, yb = x[i : i + BATCH], y[i : i + BATCH]
        r = xb @ w0 + b0 - yb
        grad = np.concatenate([(2 / BATCH * xb.T @ r).ravel(), 2 / BATCH * r.sum(0)])
        moved = np.concatenate([(w0 - w1).ravel(), b0 - b1])
        if not np.allclose(moved, lrs[k] * grad, rtol=2e-4, atol=1e-9):
            bad.append(
                f"step {k}: moved by {float(moved @ grad / (grad @ grad)):.6g} x grad, expected {lrs[k]:.6g}"
            )
    return bad


# ---------------------------------------------------------------------------- recording
class EpochEnd(Rule):
    """Keras logs a row per epoch; tmon records every batch: an epoch's value is compared at the step of
    its last batch (5 batches an epoch), ``lr``/``epoch`` aside."""

    def points(self, key, tmon_pts, ref_pts):
        return tmon_pts, [(5 * int(e) + 4, v) for e, v in ref_pts]


def test_recording_is_what_keras_logged_and_checkpoints_are_recorded(fits):
    rec = fits["record"]
    url, run_id = fits["url"], rec["run_id"]
    run = open_store(url).run(run_id)
    assert run.status == "completed"
    assert run.info()["config"]["backend"] == fits["backend"]
    tmon = read_run(url, run_id)
    rules = [EpochEnd(why=EpochEnd.__doc__), AtReferenceSteps(why="tmon records every batch")]
    csv = read_csv(fits["out"] / "log.csv", step_column="epoch")
    csv.pop("epoch", None)
    require = ["loss", "mae", "val_loss", "val_mae"]
    compare(tmon, csv, rules, require=require).check()  # every value CSVLogger wrote, equal
    history = from_records(
        [{"epoch": e, **{k: v[i] for k, v in rec["history"].items()}} for i, e in enumerate(rec["epochs"])],
        step_key="epoch",
    )
    compare(tmon, history, rules, require=require).check()
    # what each step used: the schedule at that step, read off the hot path on every backend
    assert run.metrics("loss").step.tolist() == list(range(15))
    assert run.metrics("lr").value.tolist() == pytest.approx(rec["schedule"], rel=1e-6)
    assert run.metrics("momentum").value.tolist() == [0.5] * 15
    # ModelCheckpoint's files, each recorded once with the step and epoch it was written at
    ckpts = run.checkpoints()
    files = sorted(str(p) for p in (fits["out"] / "ckpt").iterdir())
    assert sorted(ckpts.path) == files and len(files) == 3
    assert ckpts.step.tolist() == [5, 10, 15] and ckpts.epoch.tolist() == [0, 1, 2]
    assert all(os.path.getsize(p) == s for p, s in zip(ckpts.path, ckpts.size_bytes))
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_MAX_EPOCHS


def test_a_clean_run_gives_no_tmon_warning(fits):
    assert fits["tmon_warnings"] == [], fits["tmon_warnings"]


# ---------------------------------------------------------------------------- steering reaches the step
def test_float_lr_scheduled_and_pinned_live_reaches_the_step(fits):
    """lr 0.05, ``At(step=4, lr=0.01)``, then a live pin at 1e-12 from another thread (applied before
    step 8, the third epoch). Nothing reads the model mid-epoch (on JAX that would hand tmon a synced
    model): the weights stop moving in the third epoch, and the lr recorded is what each step used."""
    res = fits["float_lr"]
    assert res["request"] == {"status": "applied", "reason": None}
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.metrics("lr").value.tolist() == pytest.approx([0.05] * 4 + [0.01] * 4 + [1e-12] * 4)
    ends = res["epoch_end"]
    assert ends["2"] == ends["1"], "lr pinned at 1e-12: the third epoch must not move the weights"
    assert ends["1"] != ends["0"]
    req = run.requests().iloc[0]
    assert req.status == "applied" and int(req.applied_step) == 8


def test_schedule_lr_scaled_and_pinned_live_reaches_the_compiled_step(fits):
    """An ExponentialDecay: ``At(step=4, lr=0.01)`` rescales it (the schedule goes on from 0.01), a live
    pin at 0.002 holds from step 8. Each step's update is lr × gradient with that lr."""
    res = fits["schedule_lr"]
    s = res["schedule"]
    expected = s[:4] + [0.01 * s[k] / s[4] for k in range(4, 8)] + [0.002] * 4
    assert res["request"] == {"status": "applied", "reason": None}
    assert sgd_check(res["weights"], expected, range(12)) == []
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.metrics("lr").value.tolist() == pytest.approx(expected, rel=1e-5)
    changes = run.events("param_change")
    assert changes.step.tolist() == [4, 8]  # the pin's repeats are quiet
    # a compiled step is traced again for each new schedule object: twice, not at every pinned step
    retraced = [d.get("retraced") for d in changes.data]
    assert retraced == (["train_function"] * 2 if COMPILED[fits["backend"]] else [None, None])


def test_momentum_change_reaches_the_compiled_step(fits):
    """SGD(0.05, momentum=0.9), ``At(step=4, momentum=0.0)``: a Python number the compiled step read
    when traced. From step 4 each update is exactly 0.05 × the gradient; before, momentum adds to it."""
    res = fits["momentum"]
    lrs = [0.05] * 12
    assert sgd_check(res["weights"], lrs, range(4, 12)) == []
    assert len(sgd_check(res["weights"], lrs, range(1, 4))) == 3  # momentum at work before
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.metrics("momentum").value.tolist() == [0.9] * 4 + [0.0] * 8
    change = run.events("param_change").iloc[0]
    assert change.step == 4 and change.data.get("retraced") == (
        "train_function" if COMPILED[fits["backend"]] else None
    )


def test_rollback_restores_what_the_compiled_step_then_uses(fits):
    """A checkpoint saved before step 3, a rollback before step 7 (SGD with momentum, shuffle=False:
    step 7 trains on step 3's batch). Step 7 starts from step 3's weights, and its update equals step
    3's: the step ran on the restored weights and momentum buffers."""
    res = fits["rollback"]
    assert {k: status for k, (status, _) in res["requests"].items()} == {
        "ckpt": "applied",
        "rollback": "applied",
    }
    w = {k: [np.array(a) for a in v] for k, v in res["weights"].items()}
    assert all(np.array_equal(a, b) for a, b in zip(w["7"], w["3"]))
    assert not all(np.allclose(a, b) for a, b in zip(w["7"], w["6"]))
    assert all(np.allclose(a, b, rtol=1e-6, atol=1e-7) for a, b in zip(w["8"], w["4"]))
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.status == "completed"
    manual = run.checkpoints().query("source == 'manual'").iloc[0]
    assert manual.step == 3 and manual.path.endswith(".keras") and os.path.exists(manual.path)
    assert run.events("rollback").step.tolist() == [7]
    assert sorted(run.checkpoints().source) == ["ModelCheckpoint"] * 3 + ["manual"]


def test_jax_fit_holds_the_optimizer_state_outside_the_variables(fits):
    """What ``_workarounds.keras.live_value`` relies on: JAX's fit empties the variables from the
    second batch of an epoch and keeps the current values in ``model._jax_state``."""
    if fits["backend"] != "jax":
        pytest.skip("JAX's fit only")
    seen = fits["jax_state"]["seen"]
    assert seen[0] == {"purged": [False, False], "state_iterations": None}
    assert [s["purged"] for s in seen[1:]] == [[True, True]] * 3, (
        f"Keras' JAX fit no longer purges the optimizer's variables mid-epoch: {seen}"
    )
    assert [s["state_iterations"] for s in seen[1:]] == [1, 2, 3], (
        f"model._jax_state['optimizer_variables'] no longer holds the optimizer's state: {seen}"
    )


# ---------------------------------------------------------------------------- guard= (issue 19)
def _same(a, b) -> bool:
    return all(np.array_equal(np.array(x), np.array(y)) for x, y in zip(a, b))


def _finite(w) -> bool:
    return all(np.isfinite(np.array(a)).all() for a in w)


def test_guard_rollback_restores_the_snapshot_lowers_the_lr_and_the_fit_ends_finite(fits):
    """12 steps, NaN input at steps 5 and 9, ``Guard("rollback", every=3)``: the NaN step's loss (the
    running mean Keras logs) fires it at that step's end; the weights are the snapshot's from the next
    step on, the lr halves each time, and the running means restart, so the loss logged after a
    rollback is finite and the fit ends finite."""
    res = fits["guard_rollback"]
    w = res["weights"]
    assert _same(w["6"], w["3"]) and _same(w["10"], w["9"])  # snapshots taken before steps 3 and 9
    assert _finite(w["12"]) and res["lr"] == pytest.approx(0.0125)
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.status == "completed"
    actions = [(d["action"], d["step"], d["restored_step"], d["lr_after"]) for d in run.events(ev.GUARD).data]
    assert actions == [
        ("rollback", 5, 3, pytest.approx([0.025])),
        ("rollback", 9, 9, pytest.approx([0.0125])),
    ]
    loss = run.metrics("loss").set_index("step").value
    assert loss[[5, 9]].isna().all() and np.isfinite(loss.drop([5, 9])).all()  # reset after each rollback
    assert run.metrics("lr").value.tolist() == pytest.approx([0.05] * 6 + [0.025] * 4 + [0.0125] * 2)
    assert run.events(ev.ROLLBACK).step.tolist() == [6, 10]
    assert [d["source"] for d in run.events(ev.ROLLBACK).data] == ["guard", "guard"]
    alerts = run.alerts()
    assert alerts.rule.tolist() == ["guard", "guard"] and set(alerts.level) == {"warning"}
    assert run.info()["config"]["guard"]["snapshot"]["where"] == "memory"


def test_guard_skip_withholds_the_nan_updates_on_torch_and_is_refused_where_the_step_is_compiled(fits):
    res = fits["guard_skip"]
    if COMPILED[fits["backend"]]:
        assert "guard='skip'" in res["refused"] and "guard='rollback'" in res["refused"]
        assert f"the {fits['backend']} backend" in res["refused"]
        return
    w = res["weights"]
    assert _same(w["5"], w["6"]) and _same(w["9"], w["10"])  # the NaN steps changed nothing
    assert not _same(w["4"], w["5"]) and _finite(w["12"])
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.status == "completed"
    assert [(d["action"], d["step"]) for d in run.events(ev.GUARD).data] == [("skip", 5), ("skip", 9)]
    loss = run.metrics("loss").set_index("step").value
    assert loss[[5, 9]].isna().all() and np.isfinite(loss.drop([5, 9])).all()


def test_guard_stop_ends_the_fit_at_the_nan_step(fits):
    res = fits["guard_stop"]
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.status == "completed"
    assert [(d["action"], d["step"]) for d in run.events(ev.GUARD).data] == [("stop", 5)]
    assert run.events(ev.STOPPED).step.tolist() == [6]  # at the boundary after step 5: no step 6
    assert run.metrics("loss").step.tolist() == list(range(6))
    assert run.events(ev.TRAIN_END).data[0]["reason"] == ev.END_STOP_REQUEST
    assert run.alerts().level.tolist() == ["critical"]


def test_without_a_guard_the_nan_stays(fits):
    res = fits["no_guard"]
    run = open_store(fits["url"]).run(res["run_id"])
    loss = run.metrics("loss").set_index("step").value
    assert loss[range(5, 12)].isna().all() and not _finite(res["weights"]["12"])
    assert run.events(ev.GUARD).empty


def test_guard_rollback_under_a_schedule_rescales_it_and_the_step_applies_it(fits):
    """ExponentialDecay(0.05, 4, 0.5), NaN at step 5: back to the snapshot of step 3 before step 6, lr =
    the snapshot's lr × 0.5, the schedule continuing from there (``scale``; a compiled step is
    retraced). Each update from step 6 on is exactly that lr × its gradient."""
    res = fits["guard_schedule"]

    def s(k):
        return 0.05 * 0.5 ** (k / 4)

    expected = [s(k) for k in range(6)] + [0.5 * s(3) * s(k) / s(6) for k in range(6, 12)]
    assert sgd_check(res["weights"], expected, range(6, 12), n=BATCH * 12) == []
    assert _same(res["weights"]["6"], res["weights"]["3"])
    run = open_store(fits["url"]).run(res["run_id"])
    assert run.metrics("lr").value.tolist() == pytest.approx(expected, rel=1e-5)
    change = run.events(ev.PARAM_CHANGE).iloc[0]
    assert change.step == 6 and change.data["source"] == "guard"
    assert change.data.get("retraced") == ("train_function" if COMPILED[fits["backend"]] else None)
