"""Import and export with TensorBoard, MLflow and CSV logs, on files real tools wrote: Lightning's
TensorBoardLogger, CSVLogger and MLFlowLogger in one fit whose loss went NaN, torch's
SummaryWriter, a tiny HF Trainer's trainer_state.json, Keras' CSVLogger. Every imported point is
compared with what the tool's own reader returns; exports are read back with TensorBoard's reader
and MLflow's client."""

import csv
import json
import math
import os
import subprocess
import sys

os.environ.setdefault("KERAS_BACKEND", "torch")  # before keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("tensorboard")
pytest.importorskip("mlflow")
pytest.importorskip("lightning")
import torch  # noqa: E402
from lightning.pytorch import Trainer  # noqa: E402
from lightning.pytorch.loggers import CSVLogger, MLFlowLogger, TensorBoardLogger  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import tmon_core  # noqa: E402
from examples.tiny_lightning import make  # noqa: E402
from tmon_core import Recorder, open_store  # noqa: E402
from tmon_core.interop import (  # noqa: E402
    export_mlflow,
    export_tensorboard,
    import_csv,
    import_mlflow,
    import_tensorboard,
)

TinyRegressor, SyntheticData = make("lightning.pytorch")
REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
pytestmark = [
    pytest.mark.usefixtures("one_torch_thread"),
    pytest.mark.filterwarnings("ignore::UserWarning"),
    pytest.mark.filterwarnings("ignore::FutureWarning"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]


def same(a, b) -> bool:
    """Equal as lists of floats, NaN equal to NaN."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.array_equal(a, b, equal_nan=True))


def nonfinite_finding(run_id, store_url):
    r = tmon_core.report(run_id, store=store_url, save=False)
    return [f for f in r.findings if f.rule == "stability.nonfinite"]


@pytest.fixture(scope="module")
def lightning_logs(tmp_path_factory):
    """One Lightning fit (its loss NaN from step 5) written by three loggers at once."""
    root = tmp_path_factory.mktemp("lightning")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the one_torch_thread fixture does, for this module-wide fit
    mlflow_uri = f"sqlite:///{root}/mlflow.db"
    loggers = [
        TensorBoardLogger(str(root), name="tb"),
        CSVLogger(str(root), name="csv"),
        MLFlowLogger(experiment_name="tiny", tracking_uri=mlflow_uri, run_name="tiny-nan"),
    ]
    t = Trainer(
        max_epochs=1,
        logger=loggers,
        default_root_dir=str(root),
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )  # ModelCheckpoint: into the first logger's dir
    t.fit(TinyRegressor(lr=0.05, nan_at_step=5), SyntheticData(n=256, batch_size=16))  # 12 steps
    torch.set_num_threads(threads)
    return {
        "tb": loggers[0].log_dir,
        "csv": loggers[1].log_dir,
        "mlflow": mlflow_uri,
        "mlflow_run": loggers[2].run_id,
    }


# ------------------------------------------------------------------------------- TensorBoard
def tb_scalars(log_dir) -> dict:
    """What TensorBoard's own reader holds: tag -> (steps, wall times, values)."""
    ea = EventAccumulator(str(log_dir), size_guidance={"scalars": 0})
    ea.Reload()
    return {
        tag: (
            [e.step for e in ea.Scalars(tag)],
            [e.wall_time for e in ea.Scalars(tag)],
            [e.value for e in ea.Scalars(tag)],
        )
        for tag in ea.Tags()["scalars"]
    }


def assert_run_matches(run, source: dict):
    assert sorted(run.metric_keys()) == sorted(source)
    for key, (steps, walls, vals) in source.items():
        df = run.metrics(key)
        order = np.lexsort((np.asarray(walls), np.asarray(steps)))  # the store reads points by step
        assert df.step.tolist() == [steps[i] for i in order], key
        assert same(df.wall_time, [walls[i] for i in order]), key
        assert same(df.value, [vals[i] for i in order]), key


def test_lightning_tensorboard_logger_import_matches_every_point_and_finds_the_nan(lightning_logs, store_url):
    (imp,) = import_tensorboard(lightning_logs["tb"], store_url)
    assert imp.created and imp.points > 12
    run = open_store(store_url).run(imp.run_id)
    info = run.info()
    assert info["framework"] == "tensorboard" and info["status"] == "completed"
    assert info["config"]["hparams"]["lr"] == 0.05 and info["config"]["hparams"]["nan_at_step"] == 5
    source = tb_scalars(lightning_logs["tb"])
    assert "train_loss_step" in source and any(math.isnan(v) for v in source["train_loss_step"][2])
    assert_run_matches(run, source)
    assert info["created_at"] == min(min(w) for _, w, _ in source.values())
    (f,) = nonfinite_finding(imp.run_id, store_url)
    assert f.step == 5 and f.severity == "critical"
    (ckpt,) = run.checkpoints().to_dict("records")  # the fit's ModelCheckpoint file, found beside the log
    assert ckpt["path"].endswith("epoch=0-step=12.ckpt") and ckpt["step"] == 12 and ckpt["size_bytes"] > 0
    # the same logs again: found, not duplicated
    (again,) = import_tensorboard(lightning_logs["tb"], store_url)
    assert not again.created and again.run_id == imp.run_id and len(tmon_core.runs(store_url)) == 1


def test_torch_summary_writer_import_keeps_walltimes_nan_inf_and_each_run_dir(tmp_path, store_url):
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "runs"
    for name, offset in (("a", 0.0), ("b", 100.0)):
        w = SummaryWriter(str(logdir / name))
        for step in range(50):
            loss = (
                [float("nan"), float("inf"), float("-inf")][step % 3]
                if step in (7, 8, 9)
                else 1.0 / (step + 1)
            )
            w.add_scalar("loss", loss, step, walltime=1_700_000_000.123456 + offset + step * 0.25)
            if step % 10 == 0:
                w.add_scalar("lr", 0.1 * 0.5 ** (step // 10), step, walltime=1_700_000_000.5 + offset + step)
        w.add_scalar("eval/acc", 0.75, 49, new_style=True)  # a scalar tensor of the "scalars" plugin
        w.close()
    results = import_tensorboard(logdir, store_url)
    assert [os.path.basename(r.source) for r in results] == ["a", "b"] and all(r.created for r in results)
    s = open_store(store_url)
    for r in results:
        run = s.run(r.run_id)
        source = tb_scalars(r.source)
        source["eval/acc"] = ([49], [run.metrics("eval/acc").wall_time[0]], [0.75])  # EA reads it as a tensor
        assert_run_matches(run, source)
        assert run.info()["name"] == f"runs/{os.path.basename(r.source)}"
    assert [r.created for r in import_tensorboard(logdir, store_url)] == [False, False]


def test_scalar_records_decoded_in_bulk_match_tensorboards_parser(tmp_path, store_url):
    """The fast path (records read from their bytes) on every varint width of a step, long and
    non-ASCII tags, a step of 0 (left out of the record), records it must not take (a histogram,
    a text summary, an event with no summary) in between, and a truncated last record."""
    from torch.utils.tensorboard import SummaryWriter

    logdir = tmp_path / "edge"
    w = SummaryWriter(str(logdir))
    steps = [0, 1, 127, 128, 16383, 16384, 2**21, 2**35, 2**62]
    tags = ["loss", "é/λ-tag", "x" * 200]  # a 200-character tag: its length takes two varint bytes
    for i, step in enumerate(steps):
        for j, tag in enumerate(tags):
            w.add_scalar(tag, [1.5, math.nan, -math.inf, 1e-30][(i + j) % 4], step, walltime=1e9 + i + j / 10)
        w.add_histogram("h", np.arange(5.0), step)
        w.add_text("note", f"step {step}", step)
    w.close()
    (f,) = [p for p in logdir.iterdir() if "tfevents" in p.name]
    with open(f, "ab") as fh:
        fh.write(
            b"\x10\x00\x00\x00\x00\x00\x00\x00garbage"
        )  # a record cut short: ignored, as TensorBoard does
    (imp,) = import_tensorboard(logdir, store_url)
    run = open_store(store_url).run(imp.run_id)
    source = tb_scalars(logdir)
    assert sorted(source) == sorted(tags)
    assert_run_matches(run, source)
    assert run.info()["last_step"] == 2**62
    # and the scalars did take the fast path (the histograms and texts did not)
    from tensorboard.compat.proto import event_pb2

    from tmon_core.interop.tensorboard import _decode

    simple = _decode(f.read_bytes(), event_pb2)[2]
    assert sum(simple) == len(steps) * len(tags) and len(simple) > sum(simple) + 2 * len(steps)


# ------------------------------------------------------------------------------- CSV
def test_lightning_csv_logger_import_matches_every_cell(lightning_logs, store_url):
    path = os.path.join(lightning_logs["csv"], "metrics.csv")
    (imp,) = import_csv(lightning_logs["csv"], store_url)
    run = open_store(store_url).run(imp.run_id)
    info = run.info()
    assert info["framework"] == "lightning-csv" and info["config"]["hparams"]["lr"] == 0.05
    expected: dict = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            for k, v in row.items():
                if k != "step" and v != "":
                    expected.setdefault(k, []).append((int(row["step"]), float(v)))
    assert sorted(run.metric_keys()) == sorted(expected)
    for key, pts in expected.items():
        df = run.metrics(key)
        pts.sort(key=lambda p: p[0])
        assert df.step.tolist() == [p[0] for p in pts] and same(df.value, [p[1] for p in pts]), key
        assert (df.wall_time == os.path.getmtime(path)).all()
    assert nonfinite_finding(imp.run_id, store_url)[0].step == 5
    assert not import_csv(path, store_url)[0].created


def test_keras_csv_logger_import(tmp_path, store_url):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"Keras runs on the torch backend here; this process has {keras.backend.backend()}")
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x.sum(axis=1) > 2).astype("float32")
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="binary_crossentropy", metrics=["accuracy"])
    path = str(tmp_path / "log.csv")
    model.fit(
        x,
        y,
        epochs=3,
        batch_size=16,
        validation_split=0.25,
        verbose=0,
        callbacks=[keras.callbacks.ReduceLROnPlateau(patience=1), keras.callbacks.CSVLogger(path)],
    )
    (imp,) = import_csv(path, store_url)
    run = open_store(store_url).run(imp.run_id)
    assert run.info()["framework"] == "keras-csv"
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert "learning_rate" in rows[0] and "lr" in run.metric_keys()
    for col in rows[0]:
        if col == "epoch":
            continue
        df = run.metrics("lr" if col == "learning_rate" else col)
        assert df.step.tolist() == [int(r["epoch"]) for r in rows] and same(
            df.value, [float(r[col]) for r in rows]
        )


def test_hf_trainer_state_import_matches_log_history(tmp_path, store_url):
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import BertConfig, BertForSequenceClassification, TrainingArguments
    from transformers import Trainer as HFTrainer

    class Tokens(torch.utils.data.Dataset):
        def __init__(self, n, seed=0):
            g = torch.Generator().manual_seed(seed)
            self.ids, self.labels = (
                torch.randint(0, 100, (n, 8), generator=g),
                torch.randint(0, 2, (n,), generator=g),
            )

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        num_train_epochs=2,
        logging_steps=1,
        save_strategy="epoch",
        eval_strategy="epoch",
        learning_rate=1e-3,
    )
    HFTrainer(model=model, args=args, train_dataset=Tokens(32), eval_dataset=Tokens(16, seed=1)).train()
    ckpt = tmp_path / "out" / "checkpoint-8"
    (imp,) = import_csv(ckpt, store_url)
    run = open_store(store_url).run(imp.run_id)
    info = run.info()
    assert info["framework"] == "hf-trainer-state" and info["config"]["hparams"]["max_steps"] == 8
    with open(ckpt / "trainer_state.json") as f:
        history = json.load(f)["log_history"]
    expected: dict = {}
    for entry in history:
        for k, v in entry.items():
            if k != "step" and isinstance(v, (int, float)):
                expected.setdefault("lr" if k == "learning_rate" else k, []).append((entry["step"], float(v)))
    assert {"loss", "lr", "epoch", "eval_loss", "grad_norm"} <= set(expected)
    assert sorted(run.metric_keys()) == sorted(expected)
    for key, pts in expected.items():
        df = run.metrics(key)
        assert df.step.tolist() == [p[0] for p in pts] and same(df.value, [p[1] for p in pts]), key
    assert tmon_core.report(imp.run_id, store=store_url, save=False).summary["status"] == "completed"
    ckpts = run.checkpoints()
    assert ckpts.step.tolist() == [4, 8] and [os.path.basename(p) for p in ckpts.path] == [
        "checkpoint-4",
        "checkpoint-8",
    ]
    d = tmon_core.diff(ckpts.path[0], ckpts.path[1])  # the imported run's checkpoints diff as any run's
    assert d.summary["changed"] > 0 and d.summary["b"]["step"] == 8


# ------------------------------------------------------------------------------- MLflow
def test_lightning_mlflow_logger_import_matches_metric_history(lightning_logs, store_url):
    from mlflow import MlflowClient

    results = import_mlflow(lightning_logs["mlflow"], store_url, experiment="tiny")
    (imp,) = results
    run = open_store(store_url).run(imp.run_id)
    info = run.info()
    assert info["framework"] == "mlflow" and info["name"] == "tiny-nan" and info["status"] == "completed"
    assert info["config"]["hparams"]["lr"] == "0.05"  # params are strings in MLflow
    assert info["config"]["imported_from"]["mlflow_run_id"] == lightning_logs["mlflow_run"]
    client = MlflowClient(tracking_uri=lightning_logs["mlflow"])
    mrun = client.get_run(lightning_logs["mlflow_run"])
    assert sorted(run.metric_keys()) == sorted(mrun.data.metrics)
    for key in mrun.data.metrics:
        hist = sorted(client.get_metric_history(mrun.info.run_id, key), key=lambda m: (m.step, m.timestamp))
        df = run.metrics(key)
        assert df.step.tolist() == [m.step for m in hist], key
        assert same(df.value, [m.value for m in hist]), key
        assert same(df.wall_time, [m.timestamp / 1000 for m in hist]), key
    assert nonfinite_finding(imp.run_id, store_url)[0].step == 5
    assert not import_mlflow(lightning_logs["mlflow"], store_url)[0].created  # all experiments: the same run


# ------------------------------------------------------------------------------- export
@pytest.fixture
def recorded(store_url):
    """A tmon run with NaN, ±inf, sub-millisecond wall times and two keys at different steps."""
    with Recorder(
        store_url,
        run_name="to-export",
        framework="pytorch",
        config={"hparams": {"lr": 0.1, "opt": {"b": 2}}},
        flush_interval=0.1,
    ) as rec:
        for step in range(300):
            v = [math.nan, math.inf, -math.inf][step % 3] if 100 <= step < 106 else math.sin(step) / 3.0
            rec.log({"loss": v}, step, wall_time=1_700_000_000.0 + step * 0.0123456789)
            if step % 7 == 0:
                rec.log({"lr/pg1": 1e-3 * 0.99**step}, step, wall_time=1_700_000_000.5 + step * 0.0123456789)
    return open_store(store_url).latest_run()


def test_export_to_tensorboard_reads_back_exactly(recorded, tmp_path, store_url):
    from tensorboard.backend.event_processing.plugin_event_accumulator import EventAccumulator as PluginEA
    from tensorboard.util.tensor_util import make_ndarray

    path = export_tensorboard(recorded, tmp_path / "tb")
    assert os.path.isfile(path)
    ea = PluginEA(str(tmp_path / "tb"), size_guidance={"tensors": 0})
    ea.Reload()
    assert sorted(ea.Tags()["tensors"]) == ["loss", "lr/pg1"]
    assert ea.SummaryMetadata("loss").plugin_data.plugin_name == "scalars"
    for key in ("loss", "lr/pg1"):
        df = recorded.metrics(key)
        evs = ea.Tensors(key)
        assert [e.step for e in evs] == df.step.tolist()
        assert [e.wall_time for e in evs] == df.wall_time.tolist()  # float64 both: exact
        assert same([make_ndarray(e.tensor_proto).item() for e in evs], df.value)
    # and back: a run equal to the original, bit for bit
    (back,) = import_tensorboard(tmp_path / "tb", store_url)
    again = open_store(store_url).run(back.run_id)
    for key in ("loss", "lr/pg1"):
        a, b = recorded.metrics(key), again.metrics(key)
        assert a.step.tolist() == b.step.tolist() and a.wall_time.tolist() == b.wall_time.tolist()
        assert a.value.to_numpy().tobytes() == b.value.to_numpy().tobytes()


def test_export_to_mlflow_reads_back_with_its_client(recorded, tmp_path, store_url):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/ml.db"
    rid = export_mlflow(recorded, uri)
    client = MlflowClient(tracking_uri=uri)
    mrun = client.get_run(rid)
    assert mrun.info.status == "FINISHED" and mrun.data.params == {"lr": "0.1", "opt.b": "2"}
    assert mrun.data.tags["tmon.run_id"] == recorded.id
    for key in ("loss", "lr/pg1"):
        df = recorded.metrics(key)
        hist = sorted(client.get_metric_history(rid, key), key=lambda m: m.step)
        assert [m.step for m in hist] == df.step.tolist()
        assert [m.timestamp for m in hist] == [int(round(t * 1000)) for t in df.wall_time]  # MLflow keeps ms
        # MLflow's SQL store keeps ±inf as ±max float; NaN as NaN
        clamp = np.clip(df.value.to_numpy(), -sys.float_info.max, sys.float_info.max)
        assert same([m.value for m in hist], clamp)
    (back,) = import_mlflow(uri, store_url)
    again = open_store(store_url).run(back.run_id)
    assert again.info()["config"]["hparams"] == {"lr": "0.1", "opt.b": "2"}
    for key in ("loss", "lr/pg1"):
        a, b = recorded.metrics(key), again.metrics(key)
        assert (
            a.step.tolist() == b.step.tolist()
            and a.value.to_numpy().tobytes() == b.value.to_numpy().tobytes()
        )
        assert np.allclose(a.wall_time, b.wall_time, rtol=0, atol=0.0005)


def test_export_to_an_mlflow_file_store_and_back(recorded, tmp_path, store_url):
    """MLflow 3 keeps its file store (mlruns/) in maintenance mode; old stores are still read and
    written. It keeps ±inf as such."""
    from mlflow import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    rid = export_mlflow(recorded, uri)
    hist = sorted(MlflowClient(tracking_uri=uri).get_metric_history(rid, "loss"), key=lambda m: m.step)
    assert same([m.value for m in hist], recorded.metrics("loss").value)
    (back,) = import_mlflow(uri, store_url)
    a, b = recorded.metrics("loss"), open_store(store_url).run(back.run_id).metrics("loss")
    assert a.step.tolist() == b.step.tolist() and a.value.to_numpy().tobytes() == b.value.to_numpy().tobytes()


def test_the_commands(recorded, tmp_path, store_url):
    def cli(*argv):
        return subprocess.run(
            [sys.executable, "-m", "tmon_core.interop", "--store", store_url, *argv],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )

    out = cli("export", recorded.id, "--format", "tensorboard", "-o", str(tmp_path / "tb"))
    assert out.returncode == 0, out.stderr
    assert "tfevents" in out.stdout
    out = cli("import", "tensorboard", str(tmp_path / "tb"), "--name", "from-tb")
    assert out.returncode == 0 and "imported 343 points of 2 keys as run" in out.stdout, out.stderr
    out = cli("import", "tensorboard", str(tmp_path / "tb"))
    assert out.returncode == 0 and "already in the store as run" in out.stdout, out.stderr
    out = cli("export", "from-tb", "--format", "mlflow", "--tracking-uri", f"sqlite:///{tmp_path}/ml.db")
    assert out.returncode == 0 and "MLflow run" in out.stdout, out.stderr
    out = cli("import", "mlflow", "--tracking-uri", f"sqlite:///{tmp_path}/ml.db", "--experiment", "tmon")
    assert out.returncode == 0 and "imported 343 points" in out.stdout, out.stderr
    assert sorted(tmon_core.runs(store_url)["framework"]) == ["mlflow", "pytorch", "tensorboard"]


def test_import_tmon_core_stays_free_of_tensorboard_and_mlflow():
    code = (
        "import sys, tmon_core, tmon_core.interop; "
        "print(sorted(m for m in ('tensorboard', 'mlflow', 'torch') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.stdout.strip() == "[]", out.stderr


def test_registered_in_the_tmon_command(recorded, tmp_path, store_url, capsys):
    """``tmon import ...``, ``tmon exporter`` and ``tmon export --format tensorboard|mlflow`` beside the
    other commands, --store before or after the subcommand."""
    from tmon_core import cli

    _, handlers = cli.build_parser()
    assert {"import", "exporter", "report", "diff"} <= set(handlers)
    assert (
        cli.main(
            [
                "--store",
                store_url,
                "export",
                recorded.id,
                "--format",
                "tensorboard",
                "-o",
                str(tmp_path / "tb"),
            ]
        )
        == 0
    )
    assert str(tmp_path / "tb") in capsys.readouterr().out
    assert cli.main(["--store", store_url, "import", "tensorboard", str(tmp_path / "tb")]) == 0
    assert "imported 343 points" in capsys.readouterr().out
    assert cli.main(["import", "tensorboard", str(tmp_path / "tb"), "--store", store_url]) == 0
    assert "already in the store" in capsys.readouterr().out
    assert cli.main(["import", "--store", store_url, "csv", str(tmp_path / "nothing.csv")]) == 1
    assert "nothing.csv" in capsys.readouterr().err
