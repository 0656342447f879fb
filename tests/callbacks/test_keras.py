"""TMonCallback in real Keras 3 fits (torch backend, CPU), read back through the query API."""

import os

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import subprocess  # noqa: E402
import sys  # noqa: E402
import textwrap  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

keras = pytest.importorskip("keras")
if keras.backend.backend() != "torch":  # keras was imported before this module with another backend
    pytest.skip(
        f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}",
        allow_module_level=True,
    )

from tmon_callbacks.keras import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import keys, open_store  # noqa: E402

# Keras 3.15 under numpy 2.4 warns about its own __array__ when it saves or converts variables
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_torch_thread"),
]
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def data(n: int = 100, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 4), dtype=np.float32)
    return x, (x.sum(axis=1) > 2).astype("float32")


class FailingDense(keras.layers.Dense):
    """A Dense layer that raises ``error`` in the training call once ``armed`` is set."""

    armed = False
    error: BaseException = RuntimeError("boom inside the step")

    def call(self, inputs, training=None):
        if training and self.armed:
            raise self.error
        return super().call(inputs)


def mlp(optimizer, failing: bool = False):
    keras.utils.set_random_seed(0)
    hidden = FailingDense(8, activation="relu") if failing else keras.layers.Dense(8, activation="relu")
    model = keras.Sequential([keras.Input((4,)), hidden, keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=optimizer, loss="binary_crossentropy", metrics=["accuracy"])
    return model


def test_fit_records_batches_epochs_lr_checkpoints_and_completes(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2, run_name="keras-test")
    ckpt = keras.callbacks.ModelCheckpoint(str(tmp_path / "ckpt" / "m-{epoch:02d}-{val_loss:.3f}.keras"))
    model = mlp(keras.optimizers.Adam(learning_rate=0.01))
    x, y = data(100)
    history = model.fit(x, y, batch_size=16, epochs=3, validation_split=0.2, verbose=0, callbacks=[cb, ckpt])
    # 80 training samples / 16 = 5 batches per epoch, 15 steps

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    info = run.info()
    assert info["name"] == "keras-test" and info["framework"] == "keras" and info["total_steps"] == 15
    cfg = info["config"]
    assert cfg["backend"] == "torch" and cfg["batch_size"] == 16 and cfg["epochs"] == 3
    assert (
        cfg["batches_per_epoch"] == 5 and cfg["precision"] == "32-true" and cfg["dtype_policy"] == "float32"
    )
    assert cfg["optimizers"][0]["class"] == "Adam"
    assert cfg["optimizers"][0]["config"]["learning_rate"] == pytest.approx(0.01)
    assert cfg["num_parameters"] == model.count_params() and cfg["loss"] == "binary_crossentropy"

    # every batch: Keras' logs under its names, the lr read from the optimizer, timings, epoch
    steps = list(range(15))
    for key in (keys.LOSS, "accuracy", keys.LR, keys.MOMENTUM, keys.STEP_TIME, keys.EPOCH):
        assert run.metrics(key).step.tolist() == steps, key
    assert run.metrics(keys.LR).value.tolist() == pytest.approx([0.01] * 15)
    assert run.metrics(keys.MOMENTUM).value.eq(0.9).all()  # Adam's beta_1
    assert run.metrics(keys.EPOCH).value.tolist() == [s // 5 for s in steps]
    assert (run.metrics(keys.STEP_TIME).value > 0).all()
    # per epoch: what the batches did not carry, at the step of the epoch's last batch
    val_loss = run.metrics("val_loss")
    assert val_loss.step.tolist() == [4, 9, 14]
    assert val_loss.value.tolist() == pytest.approx(history.history["val_loss"])
    assert run.metrics("val_accuracy").value.tolist() == pytest.approx(history.history["val_accuracy"])
    assert run.metrics(keys.LOSS).value.iloc[[4, 9, 14]].tolist() == pytest.approx(history.history["loss"])

    # the files ModelCheckpoint wrote, with the value it monitored
    ckpts = run.checkpoints()
    assert ckpts.epoch.tolist() == [0, 1, 2] and ckpts.step.tolist() == [5, 10, 15]
    assert sorted(ckpts.path) == sorted(str(p) for p in (tmp_path / "ckpt").iterdir())
    for row in ckpts.itertuples():
        assert row.size_bytes == os.path.getsize(row.path) > 0 and row.monitor == "val_loss"
    assert ckpts.monitor_value.tolist() == pytest.approx(history.history["val_loss"])

    types = [t for t in run.events().type if t != "sampler"]
    assert types[:2] == [ev.TRAIN_START, ev.EPOCH_START] and types[-1] == ev.TRAIN_END
    assert types.count(ev.EPOCH_END) == types.count(ev.VALIDATION_END) == types.count(ev.CHECKPOINT) == 3
    assert run.events(ev.TRAIN_END).data[0] == {"reason": ev.END_MAX_EPOCHS, "epochs": 3}
    assert cfg[ev.CONFIG_CALLBACKS] == [
        {
            "name": "ModelCheckpoint",
            "monitor": "val_loss",
            "mode": "auto",
            "save_best_only": False,
            "save_weights_only": False,
            "save_freq": "epoch",
            "filepath": ckpt.filepath,
        }
    ]
    assert model.train_function.__name__ != "step_function"  # the fit's wrapper is gone


def test_exponential_decay_lr_follows_schedule_and_two_fits_make_two_runs(tmp_path, store_url):
    schedule = keras.optimizers.schedules.ExponentialDecay(0.1, decay_steps=3, decay_rate=0.5)
    model = mlp(keras.optimizers.SGD(schedule, momentum=0.8))
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    x, y = data(64)
    ids = []
    for _ in range(2):
        model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])  # 4 batches per epoch
        ids.append(cb.run_id)
    assert ids[0] != ids[1]
    store = open_store(store_url)
    # the second fit goes on from the optimizer's iteration count, and so does its schedule
    for rid, first in zip(ids, (0, 8), strict=True):
        run = store.run(rid)
        assert run.status == "completed"
        lr = run.metrics(keys.LR)
        assert lr.step.tolist() == list(range(first, first + 8))
        assert lr.value.tolist() == pytest.approx([0.1 * 0.5 ** (s / 3) for s in lr.step], rel=1e-5)
        assert run.metrics(keys.MOMENTUM).value.tolist() == pytest.approx([0.8] * 8)


@pytest.mark.parametrize(
    "error, event_type",
    [(RuntimeError("boom inside the step"), ev.EXCEPTION), (MemoryError("out of memory"), ev.OOM)],
)
def test_fit_raising_marks_failed_and_keeps_points(tmp_path, store_url, error, event_type):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    model = mlp(keras.optimizers.Adam(0.01), failing=True)
    layer = model.layers[0]
    layer.error = error
    arm = keras.callbacks.LambdaCallback(
        on_train_batch_begin=lambda b, logs: b == 2 and setattr(layer, "armed", True)
    )
    x, y = data(64)
    with pytest.raises(type(error)):
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb, arm])
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "failed"
    assert run.metrics(keys.LOSS).step.tolist() == [0, 1]
    last = run.events().iloc[-1]
    assert last.type == event_type and last.step == 2
    assert last.data["type"].endswith(type(error).__name__) and "Traceback" in last.data["traceback"]
    assert str(error) in run.info()["error"]["message"]  # Keras adds the layer's name and inputs
    assert model.train_function.__name__ != "step_function"


@pytest.mark.slow
def test_exception_outside_a_step_reaching_the_top_level_marks_failed(tmp_path, store_url):
    """A data pipeline raising: no step function sees it, the uncaught-exception hook does."""
    script = textwrap.dedent(f"""
        import os, sys
        os.environ["KERAS_BACKEND"] = "torch"
        sys.path.insert(0, {REPO!r})
        import numpy as np, keras
        from tmon_callbacks.keras import TMonCallback

        class Data(keras.utils.PyDataset):
            def __len__(self):
                return 8
            def __getitem__(self, i):
                if i == 3:
                    raise ValueError("corrupt record 3")
                return np.ones((4, 4), "float32"), np.ones((4, 1), "float32")

        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
        model.compile(optimizer="sgd", loss="mse")
        cb = TMonCallback({store_url!r}, flush_interval=0.1, sample_interval=None)
        model.fit(Data(), epochs=1, verbose=0, shuffle=False, callbacks=[cb])
    """)
    proc = subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 1 and "corrupt record 3" in proc.stderr, proc.stderr[-3000:]
    runs = open_store(store_url).runs()
    assert len(runs) == 1, proc.stderr[-3000:]
    run = open_store(store_url).run(runs.id[0])
    assert run.status == "failed"
    assert run.info()["error"]["type"] == "builtins.ValueError"
    assert run.metrics(keys.LOSS).step.tolist() == [0, 1, 2]


def test_constructor_rejects_bad_options_by_name():
    with pytest.raises(ValueError, match="log_grad_norm=True"):
        TMonCallback(log_grad_norm=True)
    with pytest.raises(ValueError, match="sample_interval"):
        TMonCallback(sample_interval=-1)


def test_same_store_three_frameworks_read_the_same_way(tmp_path, store_url, capsys):
    """A Lightning fit, a HF training and a Keras fit into one store: three runs with the same
    metric names, read by the same query API and ``tmon show``."""
    pytest.importorskip("lightning")
    pytest.importorskip("transformers")
    from lightning.pytorch import Trainer as LightningTrainer
    from transformers import Trainer as HFTrainer

    from examples.tiny_lightning import make
    from tests.callbacks.test_hf import TokenData, args, tiny_bert
    from tmon_callbacks.hf import TMonCallback as HFCallback
    from tmon_callbacks.lightning import TMonCallback as LightningCallback
    from tmon_core import cli

    opts = {"flush_interval": 0.1, "sample_interval": None}
    TinyRegressor, SyntheticData = make("lightning.pytorch")
    lightning_cb = LightningCallback(store_url, **opts)
    LightningTrainer(
        max_epochs=1,
        callbacks=[lightning_cb],
        default_root_dir=tmp_path,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
    ).fit(TinyRegressor(), SyntheticData(n=64, batch_size=16))
    hf_cb = HFCallback(store_url, **opts)
    HFTrainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        callbacks=[hf_cb],
        args=args(tmp_path / "hf", num_train_epochs=1, save_strategy="no"),
    ).train()
    keras_cb = TMonCallback(store_url, **opts)
    x, y = data(64)
    mlp(keras.optimizers.SGD(0.05)).fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[keras_cb])

    store = open_store(store_url)
    runs = store.runs()
    assert sorted(runs.framework) == ["hf", "keras", "lightning"] and (runs.status == "completed").all()
    common = {keys.LOSS, keys.LR, keys.MOMENTUM, keys.STEP_TIME, keys.DATA_TIME, keys.EPOCH}
    for cb in (lightning_cb, hf_cb, keras_cb):
        run = store.run(cb.run_id)
        assert common <= set(run.metric_keys()), (run.info()["framework"], run.metric_keys())
        assert (
            len(run.metrics(keys.LR)) >= 3
            and run.events().type.isin([ev.TRAIN_START, ev.TRAIN_END]).sum() == 2
        )
        assert cli.main(["--store", store_url, "show", cb.run_id]) == 0
        out = capsys.readouterr().out
        assert "status    completed" in out and "steps     " in out and " lr " in out


def test_reduce_lr_on_plateau_and_early_stopping_as_keras_logged_them(tmp_path, store_url):
    """ReduceLROnPlateau fires at the end of epochs 1 and 2 (nothing beats min_delta), EarlyStopping
    ends the fit after epoch 3 of 10: tmon's lr at each step is what CSVLogger's learning_rate column
    says for that step's epoch, train_end says why the fit ended, the config lists both callbacks."""
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1, min_delta=10.0)
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=3, min_delta=10.0, mode="min")
    csv = keras.callbacks.CSVLogger(str(tmp_path / "log.csv"))
    model = mlp(keras.optimizers.SGD(0.1))
    x, y = data(100)
    history = model.fit(
        x, y, batch_size=16, epochs=10, validation_split=0.2, verbose=0, callbacks=[cb, plateau, stop, csv]
    )
    logged = np.genfromtxt(tmp_path / "log.csv", delimiter=",", names=True)
    assert logged["learning_rate"].tolist() == pytest.approx(
        [0.1, 0.1, 0.05, 0.025]
    )  # fired at epochs 1, 2 (not 3)

    run = open_store(store_url).run(cb.run_id)
    lr = run.metrics(keys.LR)
    assert lr.step.tolist() == list(range(20))
    assert lr.value.tolist() == pytest.approx(
        np.repeat(logged["learning_rate"], 5).tolist()
    )  # 5 steps per epoch
    assert run.metrics("val_loss").value.tolist() == pytest.approx(history.history["val_loss"])
    assert "learning_rate" not in run.metric_keys()  # ReduceLROnPlateau's epoch-log copy of lr: stored once

    end = run.events(ev.TRAIN_END)
    assert end.step.tolist() == [20]
    assert end.data[0] == {
        "reason": ev.END_EARLY_STOPPING,
        "callback": "EarlyStopping",
        "monitor": "val_loss",
        "mode": "min",
        "patience": 3,
        "min_delta": 10.0,
        "baseline": None,
        "restore_best_weights": False,
        "start_from_epoch": 0,
        "stopped_epoch": 3,
        "best_epoch": 0,
    }
    assert run.info()["config"][ev.CONFIG_CALLBACKS] == [
        {
            "name": "ReduceLROnPlateau",
            "monitor": "val_loss",
            "mode": "auto",
            "factor": 0.5,
            "patience": 1,
            "min_delta": 10.0,
            "cooldown": 0,
            "min_lr": 0.0,
        },
        {
            "name": "EarlyStopping",
            "monitor": "val_loss",
            "mode": "min",
            "patience": 3,
            "min_delta": 10.0,
            "baseline": None,
            "restore_best_weights": False,
            "start_from_epoch": 0,
        },
        {"name": "CSVLogger"},
    ]


def batches(n: int):
    """A generator of ``n`` batches of 16, read once."""
    x, y = data(16 * n)
    for i in range(n):
        yield x[16 * i : 16 * (i + 1)], y[16 * i : 16 * (i + 1)]


@pytest.mark.filterwarnings("ignore:Your input ran out of data")
@pytest.mark.parametrize("case", ["max_epochs", "should_stop", "data_exhausted"])
def test_train_end_says_why_the_fit_ended(tmp_path, store_url, case):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    model = mlp(keras.optimizers.SGD(0.05))
    if case == "data_exhausted":  # 7 batches for 3 epochs of 4: epoch 1 gets 3, epoch 2 none
        model.fit(batches(7), steps_per_epoch=4, epochs=3, verbose=0, callbacks=[cb])
    else:
        stopper = keras.callbacks.LambdaCallback(
            on_train_batch_end=lambda b, logs: (
                b == 1 and setattr(model, "stop_training", case == "should_stop")
            )
        )
        x, y = data(64)
        model.fit(x, y, batch_size=16, epochs=3, verbose=0, callbacks=[cb, stopper])
    run = open_store(store_url).run(cb.run_id)
    end = run.events(ev.TRAIN_END)
    assert end.data[0]["reason"] == case and case in ev.END_REASONS
    steps = len(run.metrics(keys.LOSS))
    assert end.step.tolist() == [steps]  # the number of steps run
    if case == "data_exhausted":
        assert steps < 12  # not 7: Keras' generator adapter replays the batches it peeked at
    else:
        assert steps == {"max_epochs": 12, "should_stop": 2}[case]


def test_evaluate_after_the_fit_goes_into_the_run(tmp_path, store_url):
    """keras-io's mnist_convnet ending: ``model.evaluate(x_test, y_test)`` without callbacks, after the
    fit. Recorded into the ended run as test_<name> at its last step, status kept; once another fit
    trained the model, its evaluations are no longer this run's."""
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    model = mlp(keras.optimizers.Adam(0.01))
    x, y = data(64)
    model.fit(
        x, y, batch_size=16, epochs=2, validation_split=0.25, verbose=0, callbacks=[cb]
    )  # 3 steps an epoch
    xt, yt = data(32, seed=1)
    score = model.evaluate(xt, yt, verbose=0)  # [loss, accuracy]
    again = model.evaluate(xt, yt, verbose=0, return_dict=True, callbacks=[cb])  # cb listed: recorded once
    model.save(tmp_path / "after.keras")  # the evaluate wrapper is nothing Keras saves
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # no tmon: a later fit of the model
    model.evaluate(xt, yt, verbose=0)

    store = open_store(store_url)
    assert len(store.runs()) == 1
    run = store.run(cb.run_id)
    assert run.status == "completed"
    test_loss = run.metrics("test_loss")
    assert test_loss.step.tolist() == [5, 5] and test_loss.value.tolist() == pytest.approx(
        [score[0], again["loss"]]
    )
    assert run.metrics("test_accuracy").value.tolist() == pytest.approx([score[1], again["accuracy"]])
    assert run.metrics(keys.LOSS).step.tolist() == list(range(6))  # the fit's own loss untouched
    evals = run.events()
    evals = evals[evals.type.isin([ev.EVALUATION_START, ev.EVALUATION_END])]
    assert evals.type.tolist() == [ev.EVALUATION_START, ev.EVALUATION_END] * 2
    assert {d["stage"] for d in evals.data} == {"evaluate"} and (evals.step == 5).all()
    assert "evaluate" not in vars(model)  # the later fit's evaluate found the model retrained and let go
    keras.saving.load_model(tmp_path / "after.keras")
