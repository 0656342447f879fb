"""Keras fits with TMonCallback on the backend of ``$KERAS_BACKEND``, run in a process of their own
(Keras picks its backend once per process, at import) by ``tests/callbacks/test_keras_backends.py``.

    KERAS_BACKEND=jax python -m tests.callbacks.keras_backend_fits OUT_DIR [CASE ...]

Each case trains a tiny model on CPU and returns what the test asserts on, as JSON (the last line of
stdout: ``{case: result}``): the run's id (the test reads the store, ``OUT_DIR/tmon.db``, itself),
what Keras reported (``History``), the weights a probe read at each step, the requests' outcomes and
every warning that mentions tmon. No assertion here: the test says what must hold.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import warnings

import numpy as np

#: y = x @ W_TRUE + 0.3: a linear model's SGD update is lr * its gradient, checked in numpy
W_TRUE = np.array([1.0, -2.0, 3.0, 0.5], dtype=np.float32)
BATCH, N = 16, 64  # 4 steps an epoch


def regression(n: int = N, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    return x, (x @ W_TRUE + 0.3)[:, None]


def main(out: str, cases: list[str]) -> dict:
    import keras

    from tests.callbacks.control_helpers import handed_over
    from tmon_callbacks.keras import TMonCallback
    from tmon_core import At, Guard, open_store

    url = f"sqlite:///{out}/tmon.db"

    def callback(**opts):
        return TMonCallback(
            url, flush_interval=0.05, sample_interval=None, widget=False, report="off", **opts
        )

    def linear(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer=optimizer, loss="mse")
        return model

    def mlp(optimizer):
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(1)]
        )
        model.compile(optimizer=optimizer, loss="mse", metrics=["mae"])
        return model

    def numbers(v) -> float:
        return float(keras.ops.convert_to_numpy(v))

    class Probe(keras.callbacks.Callback):
        """Reads the weights at every step's start (after tmon applied its decisions: listed after
        it) and at the fit's end, and runs ``actions[step]()`` at chosen steps. ``every_step=False``
        reads them at epoch ends only: on JAX, reading the model mid-epoch copies the fit's state
        back into it (``Callback.model``), which a test of tmon's own reads must not do for it."""

        def __init__(self, actions=None, every_step=True):
            super().__init__()
            self.actions, self.every_step = actions or {}, every_step
            self.step, self.weights, self.epoch_end, self.momentums = 0, {}, {}, {}

        def on_train_batch_begin(self, batch, logs=None):
            if self.every_step:
                self.weights[self.step] = [w.tolist() for w in self.model.get_weights()]
            if self.step in self.actions:
                self.actions[self.step]()

        def on_train_batch_end(self, batch, logs=None):
            self.step += 1

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_end[epoch] = [w.tolist() for w in self.model.get_weights()]

        def on_train_end(self, logs=None):
            self.weights[self.step] = [w.tolist() for w in self.model.get_weights()]

    def fit(model, cb, probe, epochs=3, **kw):
        x, y = regression()
        return model.fit(
            x, y, batch_size=BATCH, epochs=epochs, verbose=0, shuffle=False, callbacks=[cb, probe], **kw
        )

    def live(cb, **ask):
        """A request made from another thread, as a notebook cell or the widget would, while the fit
        runs; the probe holds the training thread until tmon has it, so it applies at the next step."""
        out = {}

        def ask_now():
            req = open_store(url).run(cb.run_id).set_param(**ask, requested_by="another-thread")
            out["status"] = req.wait(timeout=60)
            out["info"] = req.info()

        def action():
            thread = threading.Thread(target=ask_now)
            thread.start()
            deadline = time.time() + 30
            with open_store(url) as store:
                while store.run(cb.run_id).requests().empty and time.time() < deadline:
                    time.sleep(0.01)
            handed_over(cb)
            out["thread"] = thread

        return out, action

    def finish(req: dict) -> dict:
        req.pop("thread").join(timeout=60)
        return {"status": req.get("status"), "reason": (req.get("info") or {}).get("reason")}

    def record():  # recording, parity with CSVLogger/History, ModelCheckpoint's files
        cb = callback(run_name=f"record-{keras.backend.backend()}")
        ckpt = keras.callbacks.ModelCheckpoint(os.path.join(out, "ckpt", "m-{epoch:02d}.keras"))
        csv_logger = keras.callbacks.CSVLogger(os.path.join(out, "log.csv"))
        x, y = regression(100)
        schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=3, decay_rate=0.5)
        history = mlp(keras.optimizers.SGD(schedule, momentum=0.5)).fit(
            x,
            y,
            batch_size=BATCH,
            epochs=3,
            validation_split=0.2,
            verbose=0,
            callbacks=[cb, ckpt, csv_logger],
        )  # 80 training samples: 5 batches an epoch
        return {
            "run_id": cb.run_id,
            "history": history.history,
            "epochs": history.epoch,
            "schedule": [numbers(schedule(k)) for k in range(15)],
        }

    def float_lr():  # a float lr: a variable, read by every backend's compiled step
        cb = callback(schedule=[At(step=4, lr=0.01)])
        req, ask = live(cb, name="lr", value=1e-12, mode="pin")
        probe = Probe({7: ask}, every_step=False)  # pinned from step 8: the third epoch
        fit(linear(keras.optimizers.SGD(0.05)), cb, probe)
        return {"run_id": cb.run_id, "epoch_end": probe.epoch_end, "request": finish(req)}

    def schedule_lr():  # a LearningRateSchedule: an object a compiled step traces
        cb = callback(schedule=[At(step=4, lr=0.01)])
        req, ask = live(cb, name="lr", value=0.002, mode="pin")
        probe = Probe({7: ask})
        schedule = keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5)
        fit(linear(keras.optimizers.SGD(schedule)), cb, probe)
        return {
            "run_id": cb.run_id,
            "weights": probe.weights,
            "request": finish(req),
            "schedule": [numbers(schedule(k)) for k in range(12)],
        }

    def momentum():  # a Python number a compiled step reads when traced
        cb = callback(schedule=[At(step=4, momentum=0.0)])
        probe = Probe()
        fit(linear(keras.optimizers.SGD(0.05, momentum=0.9)), cb, probe)
        return {"run_id": cb.run_id, "weights": probe.weights}

    def rollback():  # a manual checkpoint before step 3, a rollback to it before step 7
        reqs = {}

        def save():
            reqs["ckpt"] = open_store(url).run(cb.run_id).request_checkpoint("before step 3")
            handed_over(cb)

        def roll():
            run = open_store(url).run(cb.run_id)
            deadline = time.time() + 10
            while (ckpts := run.checkpoints()).query("source == 'manual'").empty and time.time() < deadline:
                time.sleep(0.02)
            reqs["rollback"] = run.rollback(int(ckpts.query("source == 'manual'").id.iloc[0]))
            handed_over(cb)

        cb = callback(control="admin")
        probe = Probe({2: save, 6: roll})
        ckpt = keras.callbacks.ModelCheckpoint(os.path.join(out, "rb", "e-{epoch:02d}.keras"))
        model = linear(keras.optimizers.SGD(0.05, momentum=0.9))
        x, y = regression()
        model.fit(x, y, batch_size=BATCH, epochs=3, verbose=0, shuffle=False, callbacks=[cb, probe, ckpt])
        return {
            "run_id": cb.run_id,
            "weights": probe.weights,
            "requests": {k: [r.status, r.info().get("reason")] for k, r in reqs.items()},
        }

    def jax_state():  # what _workarounds.keras.live_value relies on (JAX only)
        seen = []

        def index(opt, variable) -> int:
            return next(i for i, v in enumerate(opt.variables) if v is variable)

        class Look(keras.callbacks.Callback):
            def on_train_batch_begin(self, batch, logs=None):
                model = self._model  # not self.model: that would copy the state back first
                opt = model.optimizer
                state = getattr(model, "_jax_state", None)
                seen.append(
                    {
                        "purged": [v._value is None for v in opt.variables],
                        "state_iterations": None
                        if state is None
                        else int(np.asarray(state["optimizer_variables"][index(opt, opt.iterations)])),
                    }
                )

        x, y = regression()
        linear(keras.optimizers.SGD(0.05)).fit(
            x, y, batch_size=BATCH, epochs=1, verbose=0, callbacks=[Look()]
        )
        return {"seen": seen}

    def guarded(mode: str, nan_steps=(5, 9), schedule=None):
        """A one-epoch fit of 12 steps whose input is NaN in the batches of ``nan_steps`` (so are that
        step's loss and gradients), under ``guard=Guard(mode, every=3)``; SGD at 0.05 or ``schedule``."""
        try:
            cb = callback(guard=Guard(mode, every=3) if mode else None)
        except ValueError as exc:
            return {"refused": str(exc)}
        x, y = regression(BATCH * 12)
        for k in nan_steps:
            x[k * BATCH] = np.nan
        probe = Probe()
        model = linear(keras.optimizers.SGD(schedule or 0.05))
        try:
            model.fit(x, y, batch_size=BATCH, epochs=1, verbose=0, shuffle=False, callbacks=[cb, probe])
        except ValueError as exc:
            return {"refused": str(exc)}
        return {"run_id": cb.run_id, "weights": probe.weights, "lr": numbers(model.optimizer.learning_rate)}

    results: dict = {"backend": keras.backend.backend()}
    known = {
        "guard_rollback": lambda: guarded("rollback"),
        "guard_skip": lambda: guarded("skip"),
        "guard_stop": lambda: guarded("stop"),
        "no_guard": lambda: guarded(None, nan_steps=(5,)),
        "guard_schedule": lambda: guarded(
            "rollback",
            nan_steps=(5,),
            schedule=keras.optimizers.schedules.ExponentialDecay(0.05, decay_steps=4, decay_rate=0.5),
        ),
        "record": record,
        "float_lr": float_lr,
        "schedule_lr": schedule_lr,
        "momentum": momentum,
        "rollback": rollback,
        "jax_state": jax_state,
    }
    for case in cases:
        if case not in known:
            raise SystemExit(f"unknown case {case!r}: one of {', '.join(known)}")
        t0 = time.perf_counter()
        results[case] = known[case]()
        results[case]["seconds"] = round(time.perf_counter() - t0, 2)
    return results


if __name__ == "__main__":
    out_dir, names = sys.argv[1], sys.argv[2:]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = main(out_dir, names)
    result["tmon_warnings"] = [str(w.message) for w in caught if "tmon" in str(w.message).lower()]
    result["warnings"] = sorted({f"{w.category.__name__}: {str(w.message)[:200]}" for w in caught})
    print(json.dumps(result))
