"""Steering real Keras 3 fits (torch backend, CPU): schedules, live requests from another process
(constant lr and a LearningRateSchedule), Keras' own rejections, manual checkpoint and rollback.
What every adapter must do (rejections, control levels, stop, presets) is
tests/callbacks/test_every_adapter.py. Assertions read the optimizer itself, not only the store."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )

from tests.callbacks.control_helpers import LIVE, handed_over, request_arrived  # noqa: E402
from tests.callbacks.test_keras import data, mlp  # noqa: E402
from tmon_callbacks._keras import ScaledSchedule  # noqa: E402
from tmon_callbacks.keras import TMonCallback  # noqa: E402
from tmon_core import At, open_store  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword")


class Probe(keras.callbacks.Callback):
    """Reads what the optimizer holds at each batch start (after tmon applied its decisions) and runs
    ``actions[step]()`` at chosen steps; sleeps ``sleep`` s per batch when asked."""

    def __init__(self, actions=None, sleep=0.0):
        super().__init__()
        self.actions, self.sleep = actions or {}, sleep
        self.step = 0
        self.steps, self.lrs, self.wds, self.moms, self.iterations = [], {}, {}, {}, {}
        self.weights, self.end_weights, self.opt_vars = {}, {}, {}

    def on_train_batch_begin(self, batch, logs=None):
        opt, step = self.model.optimizer, self.step
        self.steps.append(step)
        self.lrs[step] = float(keras.ops.convert_to_numpy(opt.learning_rate))
        self.wds[step] = opt.weight_decay
        self.moms[step] = getattr(opt, "momentum", getattr(opt, "beta_1", None))
        self.iterations[step] = int(keras.ops.convert_to_numpy(opt.iterations))
        self.weights[step] = [w.copy() for w in self.model.get_weights()]
        self.opt_vars[step] = [
            np.array(keras.ops.convert_to_numpy(v))
            for v in opt.variables
            if "iteration" not in v.path and "learning_rate" not in v.path
        ]
        if step in self.actions:
            self.actions[step]()

    def on_train_batch_end(self, batch, logs=None):
        self.end_weights[self.step] = [w.copy() for w in self.model.get_weights()]
        self.step += 1
        if self.sleep:
            time.sleep(self.sleep)


def fit(cb, probe, optimizer, n=64, epochs=3, callbacks=(), model=None):
    """64 samples, batch 16: 4 steps an epoch (12 by default)."""
    model = model or mlp(optimizer)
    x, y = data(n)
    model.fit(x, y, batch_size=16, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb, probe, *callbacks])
    return model


def recorded(run, source="manual", timeout=5.0):
    deadline = time.time() + timeout
    while (df := run.checkpoints()).query("source == @source").empty and time.time() < deadline:
        time.sleep(0.02)
    return df[df.source == source]


def same(a, b) -> bool:
    return len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


def test_schedule_changes_a_constant_lr_at_the_exact_step_and_weight_decay_at_an_epoch(tmp_path, store_url):
    cb = TMonCallback(
        store_url,
        flush_interval=0.1,
        sample_interval=None,
        schedule=[At(step=7, lr=0.01), At(epoch=1, weight_decay=0.001)],
    )
    probe = Probe()
    fit(cb, probe, keras.optimizers.SGD(0.05, momentum=0.9))
    assert [probe.lrs[k] for k in range(12)] == pytest.approx([0.05] * 7 + [0.01] * 5)
    assert [probe.wds[k] for k in range(12)] == [None] * 4 + [0.001] * 8  # None: Keras' "no weight decay"
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("lr").value.tolist() == pytest.approx([probe.lrs[k] for k in range(12)])
    assert run.metrics("weight_decay").step.tolist() == list(range(4, 12))
    changes = run.events("param_change")
    assert changes.step.tolist() == [4, 7]
    assert changes.data[1]["source"] == "schedule" and changes.data[1]["old"]["lr"] == pytest.approx(0.05)
    assert changes.data[1]["new"]["lr"] == pytest.approx(0.01)
    assert changes.data[0]["old"] == {"weight_decay": 0.0} and changes.data[0]["new"] == {
        "weight_decay": 0.001
    }
    assert run.info()["config"]["control"]["schedule"][0]["step"] == 7


def test_scale_set_and_pin_on_a_learning_rate_schedule(tmp_path, store_url):
    def s(k):  # the schedule the optimizer was built with
        return 0.1 * 0.5 ** (k / 4)

    cb = TMonCallback(
        store_url,
        flush_interval=0.1,
        sample_interval=None,
        schedule=[At(step=3, lr=0.2), At(step=6, lr=0.05, mode="set"), At(step=9, lr=0.03, mode="pin")],
    )
    probe = Probe()
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=4, decay_rate=0.5)
    model = fit(cb, probe, keras.optimizers.SGD(schedule))
    factor = 0.2 / s(3)
    expected = [s(k) for k in range(3)] + [factor * s(k) for k in range(3, 9)] + [0.03] * 3
    expected[6] = 0.05  # set: this step only, then the (rescaled) schedule again
    lrs = [probe.lrs[k] for k in range(12)]
    assert lrs == pytest.approx(expected, rel=1e-5)
    run = open_store(store_url).run(cb.run_id)
    assert run.metrics("lr").value.tolist() == pytest.approx(
        expected, rel=1e-5
    )  # as recorded, off the hot path
    assert run.events("param_change").step.tolist() == [3, 6, 9]  # a pin's repeats are quiet
    # the wrapped schedule is a Keras object like any other: a saved model keeps it
    opt = model.optimizer
    assert isinstance(opt._learning_rate, ScaledSchedule) and opt._learning_rate.schedule is schedule
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras")
    assert float(loaded.optimizer.learning_rate) == pytest.approx(float(opt.learning_rate))


@pytest.mark.slow
@pytest.mark.parametrize("lr", ["constant", "schedule"])
def test_live_change_from_another_process_sticks(tmp_path, store_url, lr):
    def s(k):
        return 0.1 * 0.5 ** (k / 20)

    procs = []
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    probe = Probe(
        {
            3: lambda: procs.append(
                subprocess.Popen(
                    [sys.executable, "-c", LIVE, store_url, cb.run_id], stdout=subprocess.PIPE, text=True
                )
            ),
            4: lambda: request_arrived(store_url, cb.run_id),
        },
        sleep=0.05,
    )
    rate = 0.1 if lr == "constant" else keras.optimizers.schedules.ExponentialDecay(0.1, 20, 0.5)
    fit(cb, probe, keras.optimizers.Adam(rate), n=240, epochs=4)  # 15 steps an epoch, 60 of ~0.05 s
    out = procs[0].communicate(timeout=60)[0].split()
    assert out[1] == "applied"
    run = open_store(store_url).run(cb.run_id)
    req = run.requests().iloc[0]
    k0 = int(req.applied_step)
    assert req.applied_at - req.requested_at < 0.1 + 0.05 + 0.35  # one poll + one step + scheduling slack
    lrs = [probe.lrs[k] for k in range(60)]
    before = [0.1 if lr == "constant" else s(k) for k in range(k0)]
    after = [0.02 if lr == "constant" else 0.02 * s(k) / s(k0) for k in range(k0, 60)]
    assert lrs == pytest.approx(before + after, rel=1e-5)  # and the schedule goes on from the new level
    assert run.metrics("lr").value.tolist() == pytest.approx(lrs, rel=1e-5)
    event = run.events("param_change").iloc[0]
    assert event.step == k0 and event.data["requested_by"] == "second-process"


def test_momentum_on_an_sgd_built_without_it_is_rejected_and_the_optimizer_is_untouched(tmp_path, store_url):
    """Keras' own case (the rest of the rejections: tests/callbacks/test_every_adapter.py): SGD built
    with momentum=0 has no momentum buffers to use."""
    reqs = []

    def ask():
        reqs.append(open_store(store_url).run(cb.run_id).set_param("momentum", 0.9))
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    probe = Probe({2: ask})
    fit(cb, probe, keras.optimizers.SGD(0.05))
    assert reqs[0].status == "rejected" and "built with momentum=0" in reqs[0].reason
    assert set(probe.moms.values()) == {0.0}


def test_adam_momentum_means_beta_1_and_a_plain_callable_lr_is_rejected(tmp_path, store_url):
    reqs = {}

    def ask():
        run = open_store(store_url).run(cb.run_id)
        reqs["momentum"] = run.set_param("momentum", 0.8)
        reqs["eps"] = run.set_param("eps", 1e-6)
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    probe = Probe({1: ask})
    model = fit(cb, probe, keras.optimizers.Adam(0.01), epochs=1)
    assert [r.status for r in reqs.values()] == ["applied", "applied"]
    assert [probe.moms[k] for k in range(4)] == [0.9, 0.9, 0.8, 0.8] and model.optimizer.epsilon == 1e-6

    def ask_lr():
        reqs["lr"] = open_store(store_url).run(cb.run_id).set_param("lr", 0.5)
        handed_over(cb)

    probe = Probe({1: ask_lr})

    def constant():
        return 0.01

    fit(cb, probe, keras.optimizers.SGD(constant), epochs=1)
    assert reqs["lr"].status == "rejected" and "plain callable" in reqs["lr"].reason
    assert list(probe.lrs.values()) == pytest.approx([0.01] * 4)


def test_manual_checkpoint_then_rollback_restores_weights_and_optimizer_and_fit_completes(
    tmp_path, store_url
):
    reqs = {}

    def save():
        reqs["ckpt"] = (
            open_store(store_url).run(cb.run_id).request_checkpoint("before lr drop", ["pre-change"])
        )
        handed_over(cb)

    def lower():
        reqs["lr"] = open_store(store_url).run(cb.run_id).set_param("lr", 0.005)
        handed_over(cb)

    def roll():
        run = open_store(store_url).run(cb.run_id)
        reqs["rollback"] = run.rollback(int(recorded(run).id.iloc[0]))
        handed_over(cb)

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({2: save, 4: lower, 6: roll})
    every_epoch = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "m-{epoch:02d}.keras"))
    fit(cb, probe, keras.optimizers.Adam(0.01), callbacks=[every_epoch])
    assert {k: r.status for k, r in reqs.items()} == dict.fromkeys(("ckpt", "lr", "rollback"), "applied")
    assert probe.steps == list(range(12))
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    ckpt = recorded(run).iloc[0]
    # saved before step 3 with model.save, next to ModelCheckpoint's files, and recorded once
    assert ckpt.step == 3 and ckpt.description == "before lr drop" and ckpt.tags == ["pre-change"]
    assert os.path.dirname(ckpt.path) == str(tmp_path / "ckpt") and ckpt.path.endswith(".keras")
    assert sorted(run.checkpoints().source) == ["ModelCheckpoint"] * 3 + ["manual"]
    assert same(keras.saving.load_model(ckpt.path).get_weights(), probe.weights[3])
    # after the rollback (before step 7): the checkpoint's weights and Adam moments ...
    assert same(probe.weights[7], probe.weights[3]) and not same(probe.end_weights[6], probe.weights[3])
    assert same(probe.opt_vars[7], probe.opt_vars[3])
    # ... but the step counter and the lr set after the checkpoint go on
    assert probe.iterations[7] == 7 and probe.lrs[7] == pytest.approx(0.005)
    rb = run.events("rollback").iloc[0]
    assert rb.step == 7 and rb.data["new"]["checkpoint_id"] == int(ckpt.id)


def test_rollback_to_a_mismatched_corrupt_or_missing_checkpoint_is_rejected(tmp_path, store_url):
    reqs = {}

    def save():
        open_store(store_url).run(cb.run_id).request_checkpoint()
        handed_over(cb)

    def roll(kind):
        def action():
            run = open_store(store_url).run(cb.run_id)
            path = recorded(run).path.iloc[0]
            if kind == "mismatch":  # the first layer fits, the second does not: nothing may be half-loaded
                other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8), keras.layers.Dense(2)])
                other.compile(optimizer=keras.optimizers.Adam(0.01), loss="mse")
                other.save(path)
            elif kind == "corrupt":
                with open(path, "wb") as f:
                    f.write(b"not a checkpoint")
            else:
                os.remove(path)
            reqs[kind] = run.rollback(int(recorded(run).id.iloc[0]))
            handed_over(cb)

        return action

    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None, control="admin")
    probe = Probe({1: save, 3: roll("mismatch"), 5: roll("corrupt"), 7: roll("missing")})
    fit(cb, probe, keras.optimizers.Adam(0.01))
    assert {k: r.status for k, r in reqs.items()} == dict.fromkeys(
        ("mismatch", "corrupt", "missing"), "rejected"
    )
    assert "cannot load checkpoint" in reqs["mismatch"].reason and "shape" in reqs["mismatch"].reason
    assert "cannot load checkpoint" in reqs["corrupt"].reason
    assert "does not exist" in reqs["missing"].reason
    for k in (4, 6, 8):  # the model as the last step left it
        assert same(probe.weights[k], probe.end_weights[k - 1]), k
    assert probe.iterations[8] == 8 and probe.steps == list(range(12))
