"""Keras 3: what tmon records is exactly what Keras' own CSVLogger and History hold (issue 15).

One parametrised test, a row per configuration (torch backend, CPU, an MLP built in the test):
each fit runs ``CSVLogger`` beside ``TMonCallback`` and the harness compares every key of the CSV
and of ``History``, at every epoch, value by value; the deliberate differences are the rules below,
each with its reason. A row also checks what the logs cannot show: why the fit ended, the callbacks
in its config, the checkpoints ``ModelCheckpoint`` kept, ``model.evaluate()`` after the fit.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )

from tests.e2e.parity.harness import AtReferenceSteps, Rename, Rule, compare, from_records, read_csv, read_run  # noqa: E402
from tmon_callbacks.keras import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import open_store  # noqa: E402

pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_torch_thread"),
]


class EpochToSteps(Rule):
    """Keras logs a row per epoch; tmon records every batch at its optimizer step. ``steps``: epoch ->
    the steps of its batches, as Keras ran them (``Batches``). A framework value
    of an epoch is compared at the step of the epoch's last batch (the running means Keras reports,
    ``val_*`` computed after it), or at every step of the epoch for ``whole_epoch`` keys (what held
    during the whole epoch: the lr ReduceLROnPlateau/LearningRateScheduler copy into the logs before
    changing it, the epoch number)."""

    def __init__(self, steps: dict[int, list[int]], whole_epoch: tuple = (), why: str = ""):
        super().__init__(why=why)
        self.steps, self.whole_epoch = steps, whole_epoch

    def points(self, key, tmon_pts, ref_pts):
        if key in self.whole_epoch:
            return tmon_pts, [(s, v) for e, v in ref_pts for s in self.steps[int(e)]]
        return tmon_pts, [(self.steps[int(e)][-1], v) for e, v in ref_pts]


class Batches(keras.callbacks.Callback):
    """The batches Keras ran in each epoch, counted from 0 (an epoch can run short of
    ``steps_per_epoch``: Keras starts the next one on fresh data)."""

    def on_train_begin(self, logs=None):
        self.steps, self.epoch, self.count = {}, None, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.steps[epoch] = []

    def on_train_batch_end(self, batch, logs=None):
        self.steps[self.epoch].append(self.count)
        self.count += 1


LR = Rename(
    "lr",
    "learning_rate",
    why="ReduceLROnPlateau and LearningRateScheduler copy the optimizer's lr into the "
    "epoch's logs as learning_rate: stored once, as tmon's lr (keras.py)",
)
EVERY_BATCH = AtReferenceSteps(why="tmon records every batch; Keras' logs hold one row per epoch")


def data(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype("float32")


def mlp(optimizer):
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
    return model


SCHEDULE = dict(initial_learning_rate=0.1, decay_steps=3, decay_rate=0.5)
# each row: (id, fit kwargs, extra); 100 samples at batch 16
ROWS = [
    ("validation-split", dict(epochs=3, validation_split=0.2), {}),  # 5 batches an epoch
    ("steps-per-epoch-validation-data", dict(epochs=4, steps_per_epoch=3), {"validation_data": True}),
    ("reduce-lr-on-plateau-fires", dict(epochs=4, validation_split=0.2), {"plateau": True}),
    ("early-stopping-fires", dict(epochs=10, validation_split=0.2), {"early": True}),
    ("learning-rate-schedule", dict(epochs=2), {"schedule": True}),  # 7 batches an epoch, the last of 4
    ("learning-rate-scheduler-callback", dict(epochs=3), {"scheduler": True}),
    ("model-checkpoint-best-only", dict(epochs=5, validation_split=0.2), {"best_only": True}),
    ("evaluate-after-fit", dict(epochs=2, validation_split=0.2), {"evaluate": True}),
]


def _params():
    for row in ROWS:
        marks = (
            [pytest.mark.filterwarnings("ignore:Your input ran out of data")]
            if "steps_per_epoch" in row[1]
            else []
        )
        yield pytest.param(*row[1:], id=row[0], marks=marks)


@pytest.mark.parametrize("fit_kw, extra", list(_params()))
def test_tmon_records_what_keras_logged(tmp_path, store_url, fit_kw, extra):
    cb = TMonCallback(store_url, flush_interval=0.2, sample_interval=None, widget=False, report="off")
    csv_path = tmp_path / "log.csv"
    batches = Batches()
    callbacks = [cb]
    if extra.get(
        "plateau"
    ):  # nothing beats min_delta: fires at the end of epochs 1 and 2 (not 3: it just fired)
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0)
        )
    if extra.get("early"):
        callbacks.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=2, min_delta=10.0))
    if extra.get("scheduler"):
        callbacks.append(keras.callbacks.LearningRateScheduler(lambda epoch, lr: lr * 0.5 if epoch else lr))
    if extra.get("best_only"):
        callbacks.append(
            keras.callbacks.ModelCheckpoint(
                str(tmp_path / "best.keras"), monitor="val_loss", save_best_only=True
            )
        )
    callbacks.append(
        keras.callbacks.CSVLogger(str(csv_path))
    )  # last: it writes what the others added to the logs
    optimizer = (
        keras.optimizers.SGD(keras.optimizers.schedules.ExponentialDecay(**SCHEDULE), momentum=0.5)
        if extra.get("schedule")
        else keras.optimizers.SGD(0.1)
    )
    model = mlp(optimizer)
    x, y = data(100)
    if extra.get("validation_data"):
        fit_kw = {**fit_kw, "validation_data": data(32, seed=1)}
    history = model.fit(x, y, batch_size=16, verbose=0, callbacks=[*callbacks, batches], **fit_kw)
    evaluated = (
        model.evaluate(*data(32, seed=2), verbose=0, return_dict=True) if extra.get("evaluate") else None
    )

    epochs, steps = history.epoch, batches.steps
    n_steps = batches.count
    tmon = read_run(store_url, cb.run_id)
    rules = [
        EpochToSteps(steps, whole_epoch=("learning_rate", "epoch"), why=EpochToSteps.__doc__.split(". ")[0]),
        EVERY_BATCH,
        LR,
    ]
    csv = read_csv(csv_path, step_column="epoch")
    csv["epoch"] = [(e, float(e)) for e in epochs]  # the row's own epoch: tmon's epoch of each of its steps
    require = ["loss", "accuracy", "epoch"] + (["val_loss"] if "val_loss" in history.history else [])
    if extra.get("plateau") or extra.get("scheduler"):
        require.append("learning_rate")
    compare(tmon, csv, rules, require=require).check()
    hist = from_records(
        [{"epoch": e, **{k: v[i] for k, v in history.history.items()}} for i, e in enumerate(epochs)],
        step_key="epoch",
    )
    compare(tmon, hist, rules, require=require[:2]).check()

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    assert run.metrics("loss").step.tolist() == list(range(n_steps)), "one loss per batch"
    lr = run.metrics("lr")
    assert lr.step.tolist() == list(range(n_steps))
    if extra.get("plateau"):
        assert history.history["learning_rate"] == pytest.approx([0.1, 0.1, 0.05, 0.025])
        assert lr.value.iloc[steps[2][0]] == pytest.approx(0.05), (
            "the reduced lr from the next epoch's first step"
        )
    if extra.get("schedule"):  # what the optimizer applied: the schedule at each iteration
        schedule = keras.optimizers.schedules.ExponentialDecay(**SCHEDULE)
        applied = {"lr": [(k, float(keras.ops.convert_to_numpy(schedule(k)))) for k in range(n_steps)]}
        compare(tmon, applied, [], rel=1e-6, require=["lr"]).check()

    events = run.events()
    end = events[events.type == ev.TRAIN_END].data.iloc[-1]
    config = run.info()["config"][ev.CONFIG_CALLBACKS]
    assert [c["name"] for c in config] == [type(c).__name__ for c in callbacks[1:]] + ["Batches"]
    if extra.get("early"):
        assert len(epochs) < fit_kw["epochs"]
        assert (end["reason"], end["callback"], end["monitor"], end["patience"], end["stopped_epoch"]) == (
            ev.END_EARLY_STOPPING,
            "EarlyStopping",
            "val_loss",
            2,
            epochs[-1],
        )
        assert config[0]["patience"] == 2 and config[0]["min_delta"] == 10.0
    else:
        assert end["reason"] == ev.END_MAX_EPOCHS
    if extra.get("plateau"):
        assert (config[0]["name"], config[0]["monitor"], config[0]["factor"], config[0]["patience"]) == (
            "ReduceLROnPlateau",
            "val_loss",
            0.5,
            1,
        )
    if extra.get("best_only"):
        assert (config[0]["monitor"], config[0]["save_best_only"]) == ("val_loss", True)
        # a save at every epoch whose val_loss beat the best so far, with that value
        val = history.history["val_loss"]
        improved = [e for e in epochs if val[e] < min(val[:e], default=np.inf)]
        ckpts = run.checkpoints(include_deleted=True)
        assert ckpts.epoch.tolist() == improved and len(improved) >= 2
        assert ckpts.monitor_value.tolist() == pytest.approx([val[e] for e in improved])
        assert ckpts.step.tolist() == [steps[e][-1] + 1 for e in improved]  # steps done when it was written
    if evaluated is not None:
        last = n_steps - 1
        # what model.evaluate() returned, as test_<name> (keras.py) at the fit's last step
        compare(
            tmon,
            {f"test_{k}": [(last, v)] for k, v in evaluated.items()},
            require=["test_loss", "test_accuracy"],
        ).check()
        kinds = events[events.type.isin([ev.EVALUATION_START, ev.EVALUATION_END])]
        assert [(t, d["stage"], s) for t, d, s in zip(kinds.type, kinds.data, kinds.step)] == [
            (ev.EVALUATION_START, "evaluate", last),
            (ev.EVALUATION_END, "evaluate", last),
        ]
