"""Checkpoint diffs: real files written by torch, safetensors, Lightning, Hugging Face and Keras on
CPU, compared with ``tmon_core.diff``; numbers checked against hand computations; bad and hostile
input refused with a ``CheckpointError`` naming the file."""

import json
import math
import os
import pickle
import subprocess
import sys

os.environ["KERAS_BACKEND"] = "torch"  # before keras is imported anywhere in this process

import numpy as np  # noqa: E402
import pytest  # noqa: E402

torch = pytest.importorskip("torch")

from tmon_core.cli import main as tmon_main  # noqa: E402
from tmon_core.diff import CheckpointError, diff  # noqa: E402
from tmon_core.diff import compare as compare_mod  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Keras 3.15 under numpy 2.4 warns about its own __array__ when it saves or converts variables
pytestmark = [
    pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy keyword"),
    pytest.mark.usefixtures("one_torch_thread"),
]


def layer(d, name):
    return d.layers.set_index("name").loc[name]


# ------------------------------------------------------------------ numbers, by hand
def test_relative_change_cosine_fraction_against_a_hand_computation(tmp_path):
    from safetensors.numpy import save_file

    a = {
        "w": np.array([[1.0, 2.0], [3.0, 4.0]], np.float32),
        "same": np.ones(3, np.float32),
        "old": np.zeros(2, np.float32),
        "grows": np.ones((2, 2), np.float32),
    }
    b = {
        "w": np.array([[4.0, 2.0], [3.0, 4.0]], np.float32),
        "same": np.ones(3, np.float32),
        "new": np.full(4, 2.0, np.float32),
        "grows": np.ones((2, 3), np.float32),
    }
    save_file(a, tmp_path / "a.safetensors")
    save_file(b, tmp_path / "b.safetensors")
    d = diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")

    w = layer(d, "w")
    # |a|² = 1+4+9+16 = 30, b-a = 3 at one element, |b|² = 16+4+9+16 = 45, a·b = 4+4+9+16 = 33
    assert w.status == "changed" and w["shape"] == (2, 2) and w.numel == 4 and w["dtype"] == "float32"
    assert w.norm_a == pytest.approx(math.sqrt(30)) and w.norm_b == pytest.approx(math.sqrt(45))
    assert w.norm_diff == pytest.approx(3.0) and w.max_abs_diff == pytest.approx(3.0)
    assert w.rel_change == pytest.approx(3 / math.sqrt(30), rel=1e-7)
    assert w.cosine == pytest.approx(33 / math.sqrt(30 * 45), rel=1e-7)
    assert w.frac_changed == 0.25
    assert layer(d, "same").status == "unchanged" and layer(d, "same").rel_change == 0
    assert layer(d, "old").status == "removed" and layer(d, "old").norm_a == 0
    new = layer(d, "new")
    assert new.status == "added" and new.norm_b == pytest.approx(4.0) and math.isnan(new.norm_a)
    grows = layer(d, "grows")
    assert grows.status == "shape_changed" and grows.shape_a == (2, 2) and grows["shape"] == (2, 3)
    assert grows.norm_a == pytest.approx(2.0) and grows.norm_b == pytest.approx(math.sqrt(6))

    s = d.summary
    assert (s["tensors"], s["compared"], s["changed"], s["unchanged"]) == (5, 2, 1, 1)
    assert (s["added"], s["removed"], s["shape_changed"]) == (1, 1, 1)
    # over the compared tensors: |a|² = 30 + 3, |b-a|² = 9
    assert s["rel_change"] == pytest.approx(3 / math.sqrt(33)) and s["frac_changed"] == pytest.approx(1 / 7)
    assert d.top(1).name.tolist() == ["w"] and len(d.top(10)) == 2
    assert s["a"]["format"] == "safetensors" and s["a"]["tensors"] == 4


def test_one_tensor_moved_by_a_known_amount_in_a_torch_state_dict(tmp_path):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(6, 5), torch.nn.BatchNorm1d(5), torch.nn.Linear(5, 2))
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    torch.save(sd, tmp_path / "a.pt")
    delta = torch.zeros_like(sd["0.weight"])
    delta[1, :3] = torch.tensor([0.5, -0.25, 1.0])
    sd["0.weight"] += delta
    sd["1.num_batches_tracked"] += 2
    torch.save(sd, tmp_path / "b.pth")
    d = diff(str(tmp_path / "a.pt"), str(tmp_path / "b.pth"))

    a64 = net.state_dict()["0.weight"].double()
    b64 = a64 + delta.double()
    w = layer(d, "0.weight")
    assert w.rel_change == pytest.approx(float(delta.double().norm() / a64.norm()), rel=1e-6)
    assert w.cosine == pytest.approx(float((a64 * b64).sum() / (a64.norm() * b64.norm())), rel=1e-7)
    assert w.frac_changed == pytest.approx(3 / 30) and w.max_abs_diff == pytest.approx(1.0)
    n = layer(d, "1.num_batches_tracked")
    assert n.status == "changed" and n["dtype"] == "int64" and n.max_abs_diff == 2 and n.frac_changed == 1
    changed = set(d.layers.name[d.layers.status == "changed"])
    assert changed == {"0.weight", "1.num_batches_tracked"}
    assert d.summary["a"]["format"] == "torch" and d.summary["unchanged"] == len(sd) - 2


def test_half_precision_in_float32_integers_exactly(tmp_path):
    from safetensors.torch import save_file

    base = torch.linspace(-2, 2, 64)
    a = {
        "h": base.half(),
        "bf": base.bfloat16(),
        "big": torch.tensor([2**53, 7], dtype=torch.int64),
        "mask": torch.tensor([True, False, True]),
    }
    b = {
        "h": (base + 0.5).half(),
        "bf": (base * 2).bfloat16(),
        "big": torch.tensor([2**53 + 1, 7], dtype=torch.int64),
        "mask": torch.tensor([True, True, True]),
    }
    for fmt, save in (("pt", torch.save), ("safetensors", save_file)):
        save(a, tmp_path / f"a.{fmt}")
        save(b, tmp_path / f"b.{fmt}")
        d = diff(tmp_path / f"a.{fmt}", tmp_path / f"b.{fmt}")
        bf = layer(d, "bf")
        ra, rb = a["bf"].double(), b["bf"].double()
        assert bf["dtype"] == "bfloat16"
        assert bf.rel_change == pytest.approx(float((rb - ra).norm() / ra.norm()), rel=1e-6)
        h = layer(d, "h")
        assert h.rel_change == pytest.approx(
            float((b["h"].double() - a["h"].double()).norm() / a["h"].double().norm()), rel=1e-6
        )
        big = layer(d, "big")  # 2**53 and 2**53 + 1 are one float64: compared as integers they differ
        assert big.status == "changed" and big.max_abs_diff == 1 and big.frac_changed == 0.5
        mask = layer(d, "mask")
        assert mask.status == "changed" and mask.frac_changed == pytest.approx(1 / 3)


def test_nan_and_inf_do_not_fake_changes(tmp_path):
    from safetensors.numpy import save_file

    a = np.array([1.0, np.nan, np.inf, 4.0], np.float32)
    save_file({"x": a, "y": a}, tmp_path / "a.safetensors")
    save_file(
        {"x": a.copy(), "y": np.array([1.0, np.nan, np.inf, np.nan], np.float32)}, tmp_path / "b.safetensors"
    )
    d = diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert layer(d, "x").status == "unchanged" and layer(d, "x").frac_changed == 0
    y = layer(d, "y")
    assert y.status == "changed" and y.frac_changed == 0.25 and math.isnan(y.norm_b)


def test_large_tensors_are_compared_a_slice_at_a_time(tmp_path, monkeypatch):
    from safetensors.numpy import save_file

    rng = np.random.default_rng(0)
    a = rng.standard_normal((101, 97)).astype(np.float32)
    b = a.copy()
    b[-1, -1] += 1.0
    b[0, :5] -= 0.5
    save_file({"w": a}, tmp_path / "a.safetensors")
    save_file({"w": b}, tmp_path / "b.safetensors")
    whole = layer(diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors"), "w")
    reads = []
    real = compare_mod._pairs

    def counting(read_a, read_b, bounds, pool):
        reads.append(len(bounds))
        return real(read_a, read_b, bounds, pool)

    monkeypatch.setattr(compare_mod, "CHUNK", 1000)  # ~10 rows per slice: 11 slices
    monkeypatch.setattr(compare_mod, "_pairs", counting)
    sliced = layer(diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors"), "w")
    assert reads == [11]
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    assert sliced.frac_changed == whole.frac_changed == 6 / a.size
    for col, expected in (
        ("rel_change", np.linalg.norm(b64 - a64) / np.linalg.norm(a64)),
        ("cosine", a64.ravel() @ b64.ravel() / (np.linalg.norm(a64) * np.linalg.norm(b64))),
        ("max_abs_diff", 1.0),
    ):
        assert sliced[col] == pytest.approx(expected, rel=1e-6) and whole[col] == pytest.approx(
            expected, rel=1e-6
        )


def test_legacy_torch_file_is_read_without_mmap(tmp_path):
    torch.save(
        {"w": torch.ones(3), "b": torch.zeros(2)}, tmp_path / "old.pt", _use_new_zipfile_serialization=False
    )
    torch.save({"w": torch.full((3,), 2.0), "b": torch.zeros(2)}, tmp_path / "new.pt")
    d = diff(tmp_path / "old.pt", tmp_path / "new.pt")
    assert layer(d, "w").rel_change == pytest.approx(1.0) and layer(d, "b").status == "unchanged"


def test_wrapper_prefixes_are_matched_and_reported(tmp_path):
    torch.manual_seed(0)
    sd = torch.nn.Linear(3, 2).state_dict()
    torch.save(sd, tmp_path / "plain.pt")
    torch.save(
        {
            "model": {f"module.{k}": v for k, v in sd.items()},
            "epoch": 3,
            "step": 40,
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
        },
        tmp_path / "ddp.pt",
    )
    d = diff(tmp_path / "plain.pt", tmp_path / "ddp.pt")
    assert d.summary["unchanged"] == 2 and d.summary["added"] == d.summary["removed"] == 0
    assert "module." in d.summary["name_mapping"]
    assert d.summary["b"]["step"] == 40 and d.summary["b"]["epoch"] == 3
    assert d.params.set_index("key").loc["optimizer.pg0.lr"].b == 0.1


# ------------------------------------------------------------------ Hugging Face
@pytest.fixture
def transformers():
    return pytest.importorskip("transformers")


def test_hf_sharded_and_single_file_save_pretrained(tmp_path, transformers):
    cfg = transformers.GPT2Config(
        n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=32, bos_token_id=0, eos_token_id=0
    )
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg)
    model.save_pretrained(tmp_path / "one")
    model.save_pretrained(tmp_path / "sharded", max_shard_size="30KB")
    assert os.path.exists(tmp_path / "sharded" / "model.safetensors.index.json")
    with torch.no_grad():
        model.transformer.h[1].mlp.c_fc.weight.mul_(1.5)
    model.config.resid_pdrop = 0.3
    model.save_pretrained(tmp_path / "changed", max_shard_size="30KB")

    same = diff(tmp_path / "one", tmp_path / "sharded")
    assert same.summary["changed"] == 0 and same.summary["unchanged"] == same.summary["tensors"] > 20
    assert same.summary["a"]["format"] == same.summary["b"]["format"] == "hf" and len(same.params) == 0

    d = diff(tmp_path / "one", tmp_path / "changed")
    assert d.layers.name[d.layers.status == "changed"].tolist() == ["transformer.h.1.mlp.c_fc.weight"]
    fc = layer(d, "transformer.h.1.mlp.c_fc.weight")
    assert fc.rel_change == pytest.approx(0.5, rel=1e-6) and fc.cosine == pytest.approx(1.0)
    assert d.params.set_index("key").loc["config.resid_pdrop"][["a", "b"]].tolist() == [0.1, 0.3]


def test_hf_bin_directory_matches_safetensors_directory(tmp_path, transformers):
    torch.manual_seed(0)
    model = transformers.BertModel(
        transformers.BertConfig(
            vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    model.save_pretrained(tmp_path / "st")
    os.makedirs(tmp_path / "bin")
    torch.save(model.state_dict(), tmp_path / "bin" / "pytorch_model.bin")  # what older transformers wrote
    (tmp_path / "bin" / "config.json").write_text((tmp_path / "st" / "config.json").read_text())
    d = diff(tmp_path / "bin", tmp_path / "st")
    assert (
        d.summary["compared"] > 10 and d.summary["changed"] == 0 and d.summary["removed"] <= 1
    )  # position_ids buffer


@pytest.mark.slow
def test_hf_trainer_checkpoints_frozen_layers_lr_and_recorded_metrics(tmp_path, store_url, transformers):
    pytest.importorskip("accelerate")
    from tmon_callbacks.hf import TMonCallback

    class Tokens(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.ids, self.labels = (
                torch.randint(0, 100, (32, 8), generator=g),
                torch.randint(0, 2, (32,), generator=g),
            )

        def __len__(self):
            return 32

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(
        transformers.BertConfig(
            vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    for p in model.bert.embeddings.parameters():
        p.requires_grad_(False)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        num_train_epochs=2,
        logging_steps=1,
        save_steps=4,
        learning_rate=1e-3,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
    )
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    transformers.Trainer(model=model, args=args, train_dataset=Tokens(), callbacks=[cb]).train()

    d = diff(tmp_path / "out" / "checkpoint-4", tmp_path / "out" / "checkpoint-8")
    frozen = d.layers.name.str.startswith("bert.embeddings.")
    assert frozen.sum() >= 4 and (d.layers.status[frozen] == "unchanged").all()
    assert (d.layers.status[~frozen] == "changed").all()
    assert d.summary["a"]["step"] == 4 and d.summary["b"]["step"] == 8 and d.summary["b"]["epoch"] == 2
    p = d.params.set_index("key")
    lr_a, lr_b = p.loc["optimizer.pg0.lr"].a, p.loc["optimizer.pg0.lr"].b  # linear decay to 0
    assert lr_a == pytest.approx(5e-4) and lr_b == pytest.approx(0.0)
    m = d.metrics.set_index("key")
    assert m.loc["learning_rate"].step_a == 4 and m.loc["learning_rate"].a == pytest.approx(6.25e-4)
    assert "training_args.bin" in " ".join(d.notes)

    run_ckpts = pytest.importorskip("tmon_core").open_store(store_url).run(cb.run_id).checkpoints()
    ids = run_ckpts.sort_values("step").id.tolist()
    rec = diff(ids[0], ids[1], store=store_url)
    assert rec.summary["a"]["id"] == ids[0] and rec.summary["a"]["run_id"] == cb.run_id
    assert rec.layers.status.tolist() == d.layers.status.tolist()
    rm = rec.metrics.set_index("key")  # from the store: the lr each checkpoint's last step ran with
    assert rm.loc["lr"].step_a == 4 and rm.loc["lr"].step_b == 8
    assert rm.loc["lr"].a == pytest.approx(m.loc["learning_rate"].a)


# ------------------------------------------------------------------ Lightning
@pytest.fixture(scope="module")
def lightning_run(tmp_path_factory):
    """A real fit: TinyRegressor with its ``body`` frozen, lr changed from 0.05 to 0.01 after the
    first epoch's checkpoint, one checkpoint per epoch, recorded by TMonCallback."""
    pytest.importorskip("lightning")
    from lightning.pytorch import Callback, Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    TinyRegressor, SyntheticData = make("lightning.pytorch")

    class DropLR(Callback):  # at the start of epoch 1: after epoch 0's checkpoint whatever the callback order
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                for g in trainer.optimizers[0].param_groups:
                    g["lr"] = 0.01

    tmp = tmp_path_factory.mktemp("lightning")
    url = f"sqlite:///{tmp}/tmon.db"
    torch.manual_seed(0)
    model = TinyRegressor(lr=0.05)
    model.body.requires_grad_(False)
    from tmon_core import At  # tmon's own steering: weight decay set at step 18, between the checkpoints

    cb = TMonCallback(
        url, flush_interval=0.1, sample_interval=None, schedule=[At(step=18, weight_decay=0.001)]
    )
    ckpt = ModelCheckpoint(dirpath=tmp / "ckpts", monitor="val_loss", save_top_k=-1)
    trainer = Trainer(
        max_epochs=2,
        callbacks=[cb, ckpt, DropLR()],
        default_root_dir=tmp,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
    )
    trainer.fit(model, SyntheticData(n=256, batch_size=16))  # 12 batches per epoch
    from tmon_core import open_store

    with open_store(url) as store:
        ckpts = store.run(cb.run_id).checkpoints().sort_values("step")
    return {
        "url": url,
        "run_id": cb.run_id,
        "ids": ckpts.id.tolist(),
        "paths": ckpts.path.tolist(),
        "model": model,
        "dir": tmp,
    }


@pytest.mark.slow
def test_lightning_checkpoints_frozen_unchanged_trainable_changed_lr_shown(lightning_run):
    a, b = lightning_run["paths"]
    d = diff(a, b)
    st = d.layers.set_index("name").status
    assert st[["body.0.weight", "body.0.bias"]].tolist() == ["unchanged", "unchanged"]
    assert st[["head.weight", "head.bias"]].tolist() == ["changed", "changed"]
    assert (
        d.summary["a"]["format"] == "lightning"
        and d.summary["a"]["step"] == 12
        and d.summary["b"]["step"] == 24
    )
    p = d.params.set_index("key")
    assert p.loc["optimizer.pg0.lr"][["a", "b"]].tolist() == [0.05, 0.01]
    assert "hparams.lr" not in p.index  # the hyperparameter the model was built with did not change
    assert d.params_all.set_index("key").loc["tmon.run_id"].a == lightning_run["run_id"]
    m = d.metrics.set_index("key")  # what ModelCheckpoint kept in the file
    assert m.loc["val_loss"].b < m.loc["val_loss"].a
    text = repr(d)
    assert "most changed tensors" in text and "optimizer.pg0.lr" in text and "<table" in d._repr_html_()
    json.dumps(CLI_SAFE(d.to_dict()))


def CLI_SAFE(v):
    from tmon_core.diff.cli import _json_safe

    return _json_safe(v)


@pytest.mark.slow
def test_lightning_recorded_ids_read_metrics_from_the_store(lightning_run):
    from tmon_core import open_store

    id_a, id_b = lightning_run["ids"]
    d = diff(id_a, id_b, store=lightning_run["url"])
    assert (d.summary["a"]["id"], d.summary["b"]["id"]) == (id_a, id_b)
    assert d.summary["b"]["run_id"] == lightning_run["run_id"]
    m = d.metrics.set_index("key")
    run = open_store(lightning_run["url"]).run(lightning_run["run_id"])
    val = run.metrics("val_loss")
    # the checkpoint after 12 steps holds batches 0..11: its epoch-end metrics are logged at step 11
    assert (m.loc["val_loss"].step_a, m.loc["val_loss"].step_b) == (11, 23)
    assert m.loc["val_loss"][["a", "b"]].tolist() == pytest.approx(val.value.tolist())
    assert (m.loc["loss"].step_a, m.loc["lr"].step_b) == (11, 23)
    assert m.loc["lr"][["a", "b"]].tolist() == pytest.approx([0.05, 0.01])
    assert "train_loss_epoch" in m.index
    # tmon's scheduled change shows in the optimizer state and as a change applied in between
    assert d.params.set_index("key").loc["optimizer.pg0.weight_decay"][["a", "b"]].tolist() == [0.0, 0.001]
    assert [(c["step"], c["source"], c["new"]) for c in d.changes] == [
        (18, "schedule", {"weight_decay": 0.001})
    ]
    assert "step 18: weight_decay" in repr(d)
    assert diff(id_b, id_a, store=lightning_run["url"]).changes == d.changes  # either order
    # a path recorded in the store gets the same metrics when the store is given
    by_path = diff(lightning_run["paths"][0], lightning_run["paths"][1], store=lightning_run["url"])
    assert by_path.summary["a"]["id"] == id_a
    assert by_path.metrics.set_index("key").loc["lr"][["a", "b"]].tolist() == pytest.approx([0.05, 0.01])


@pytest.mark.slow
def test_lightning_checkpoint_against_its_weights_in_other_formats(lightning_run, tmp_path):
    from safetensors.torch import save_file

    sd = {k: v.detach().clone().contiguous() for k, v in lightning_run["model"].state_dict().items()}
    save_file(sd, tmp_path / "final.safetensors")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "final_ddp.pt")
    last = lightning_run["paths"][1]
    for other in ("final.safetensors", "final_ddp.pt"):
        d = diff(last, tmp_path / other)
        assert d.summary["unchanged"] == 4 and d.summary["changed"] == 0, other


@pytest.mark.slow
def test_tmon_diff_command(lightning_run, capsys, tmp_path):
    a, b = lightning_run["paths"]
    url = lightning_run["url"]
    assert tmon_main(["--store", url, "diff", a, b, "--top", "2"]) == 0
    out = capsys.readouterr().out
    assert "most changed tensors (top 2" in out and "optimizer.pg0.lr" in out and "head." in out
    id_a, id_b = lightning_run["ids"]
    assert tmon_main(["--store", url, "diff", str(id_a), str(id_b), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["summary"]["a"]["id"] == id_a and len(doc["layers"]) == 4
    assert {r["key"] for r in doc["metrics"]} >= {"val_loss", "lr", "loss"}
    missing = str(tmp_path / "nope.ckpt")
    assert tmon_main(["--store", url, "diff", a, missing]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tmon diff: ") and "nope.ckpt" in err and "no such file" in err
    assert tmon_main(["--store", url, "diff", "999", a]) == 2
    assert "no checkpoint with id 999" in capsys.readouterr().err


# ------------------------------------------------------------------ Keras
@pytest.fixture
def keras():
    keras = pytest.importorskip("keras")
    pytest.importorskip("h5py")
    if keras.backend.backend() != "torch":
        pytest.skip(f"these tests run Keras on the torch backend, this process has {keras.backend.backend()}")
    return keras


@pytest.mark.slow
def test_keras_fit_checkpoints_frozen_layer_lr_change(tmp_path, store_url, keras):
    from tmon_callbacks.keras import TMonCallback

    keras.utils.set_random_seed(0)
    frozen = keras.layers.Dense(8, activation="relu", name="frozen")
    frozen.trainable = False
    model = keras.Sequential(
        [
            keras.Input((4,)),
            frozen,
            keras.layers.BatchNormalization(name="bn"),
            keras.layers.Dense(1, name="out"),
        ]
    )
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    drop = keras.callbacks.LambdaCallback(
        on_epoch_end=lambda epoch, logs: epoch == 0 and model.optimizer.learning_rate.assign(0.01)
    )
    full = keras.callbacks.ModelCheckpoint(str(tmp_path / "m-{epoch}.keras"))
    weights = keras.callbacks.ModelCheckpoint(str(tmp_path / "w-{epoch}.weights.h5"), save_weights_only=True)
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    # checkpoints save before `drop` runs at an epoch's end: epoch 1's files have lr 0.05, epoch 2's 0.01
    model.fit(x, x.sum(axis=1), batch_size=16, epochs=2, verbose=0, callbacks=[cb, full, weights, drop])

    for a, b in (("m-1.keras", "m-2.keras"), ("w-1.weights.h5", "w-2.weights.h5")):
        d = diff(tmp_path / a, tmp_path / b)
        st = d.layers.set_index("name").status
        assert st[st.index.str.startswith("layers/dense/")].eq("unchanged").all() and len(st) == 8
        assert (
            st[st.index.str.startswith(("layers/dense_1/", "layers/batch_normalization/"))]
            .eq("changed")
            .all()
        )
        assert d.summary["a"]["step"] == 4 and d.summary["b"]["step"] == 8
        p = d.params.set_index("key")
        assert p.loc["optimizer.learning_rate"][["a", "b"]].tolist() == pytest.approx([0.05, 0.01]), a
    assert d.summary["a"]["format"] == "keras-weights"
    d = diff(tmp_path / "m-1.keras", tmp_path / "m-2.keras")
    assert d.summary["a"]["format"] == "keras"
    assert d.params.set_index("key").loc["compile.optimizer.learning_rate"].b == pytest.approx(0.01)
    assert "layers.frozen.trainable" not in d.params.key.tolist()  # config equal on both sides

    from tmon_core import open_store

    ckpts = open_store(store_url).run(cb.run_id).checkpoints()
    keras_ids = ckpts[ckpts.path.str.endswith(".keras")].sort_values("step").id.tolist()
    rec = diff(keras_ids[0], keras_ids[1], store=store_url)
    m = rec.metrics.set_index("key")
    assert (m.loc["loss"].step_a, m.loc["loss"].step_b) == (3, 7)  # the last batch of each epoch
    assert m.loc["lr"][["a", "b"]].tolist() == pytest.approx([0.05, 0.01])


def test_keras_weights_file_from_a_saved_model(tmp_path, keras):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.save_weights(tmp_path / "a.weights.h5")
    model.layers[0].kernel.assign(model.layers[0].kernel * 2.0)
    model.save(tmp_path / "b.keras")
    d = diff(tmp_path / "a.weights.h5", tmp_path / "b.keras")
    k = layer(d, "layers/dense/vars/0")
    assert (
        k.status == "changed"
        and k.rel_change == pytest.approx(1.0, rel=1e-6)
        and k.cosine == pytest.approx(1.0)
    )
    assert layer(d, "layers/dense/vars/1").status == "unchanged"

    import tempfile
    import zipfile

    with (
        zipfile.ZipFile(tmp_path / "b.keras") as src,
        zipfile.ZipFile(tmp_path / "deflated.keras", "w", zipfile.ZIP_DEFLATED) as out,
    ):
        for name in src.namelist():
            out.writestr(name, src.read(name))
    before = set(os.listdir(tempfile.gettempdir()))
    d = diff(tmp_path / "b.keras", tmp_path / "deflated.keras")
    assert d.summary["unchanged"] == 2 and "extracted to a temporary file" in d.notes[0]
    assert not {f for f in set(os.listdir(tempfile.gettempdir())) - before if f.startswith("tmon-diff-")}


# ------------------------------------------------------------------ bad and hostile input
class Evil:
    """Unpickling this runs code: a full pickle.load would create ``marker``."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _good(tmp_path):
    from safetensors.numpy import save_file

    save_file({"w": np.ones(3, np.float32)}, tmp_path / "good.safetensors")
    return tmp_path / "good.safetensors"


def test_hostile_pickles_are_refused_and_never_run(tmp_path):
    good = _good(tmp_path)
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"w": torch.ones(3)}, "hyper_parameters": Evil(marker)}, tmp_path / "evil.ckpt")
    (tmp_path / "evil_legacy.pt").write_bytes(pickle.dumps({"w": Evil(marker)}, protocol=2))
    for name in ("evil.ckpt", "evil_legacy.pt"):
        with pytest.raises(CheckpointError, match="refused to unpickle") as exc:
            diff(good, tmp_path / name)
        assert exc.value.path == str(tmp_path / name)
        assert "system" in str(exc.value) and "weights_only" in str(exc.value)
    assert not marker.exists()


def test_missing_truncated_corrupt_unsupported_files(tmp_path):
    good = _good(tmp_path)
    torch.save({"w": torch.ones(1000)}, tmp_path / "full.pt")
    raw = (tmp_path / "full.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    st = good.read_bytes()
    (tmp_path / "cut.safetensors").write_bytes(st[:-4])
    (tmp_path / "noise.ckpt").write_bytes(os.urandom(4096))
    (tmp_path / "garbage.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    (tmp_path / "empty.pt").write_bytes(b"")
    np.save(tmp_path / "array.npy", np.ones(3))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "nothing").mkdir()
    cases = {
        "missing.ckpt": "no such file",
        "cut.pt": "truncated or corrupt",
        "cut.safetensors": "truncated: tensor 'w' ends at byte",
        "noise.ckpt": "",
        "garbage.safetensors": "corrupt safetensors header",
        "empty.pt": "the file is empty",
        "array.npy": "unsupported format",
        "notes.txt": "unsupported format",
        "nothing": "no weights in this directory",
    }
    for name, reason in cases.items():
        with pytest.raises(CheckpointError) as exc:
            diff(tmp_path / name, good)
        assert exc.value.path == str(tmp_path / name), name
        assert reason in str(exc.value) and str(tmp_path / name) in str(exc.value), (name, str(exc.value))


@pytest.mark.parametrize("suffix", [".weights.h5", ".keras"])
def test_truncated_keras_files(tmp_path, keras, suffix):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(64)])
    path = tmp_path / f"m{suffix}"
    model.save_weights(path) if suffix == ".weights.h5" else model.save(path)
    raw = path.read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(CheckpointError, match="truncated or corrupt") as exc:
        diff(path, cut)
    assert exc.value.path == str(cut)


def test_unrelated_models_and_bad_references(tmp_path, store_url):
    good = _good(tmp_path)
    torch.save({"encoder.weight": torch.ones(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="no tensor names in common") as exc:
        diff(good, tmp_path / "other.pt")
    assert str(good) in str(exc.value) and "other.pt" in str(exc.value)
    with pytest.raises(CheckpointError, match="received True"):
        diff(True, good)
    from tmon_core import Recorder

    rec = Recorder(store_url, flush_interval=0.05)
    gone = tmp_path / "gone.safetensors"
    gone.write_bytes(good.read_bytes())
    rec.checkpoint(gone, step=3)
    rec.close()
    gone.unlink()
    with pytest.raises(CheckpointError, match="no checkpoint with id 42"):
        diff(42, good, store=store_url)
    with pytest.raises(CheckpointError, match="no longer exists") as exc:
        diff(1, good, store=store_url)
    assert exc.value.path == 1
    with pytest.raises(CheckpointError, match="cannot look up recorded checkpoints"):
        diff(1, good, store=f"sqlite:///{tmp_path}/absent.db")


def test_importing_the_diff_imports_no_framework():
    code = (
        "import sys, tmon_core.diff, tmon_core.diff.cli; "
        "bad = [m for m in ('torch', 'h5py', 'safetensors', 'keras', 'transformers') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_the_checkpoint_layer_imports_no_framework_and_tmon_core_diff_is_the_package():
    code = (
        "import sys, types, tmon_core, tmon_core.checkpoints, tmon_core.checkpoints.rollback; "
        "import tmon_core.diff as d, tmon_core.diff.cli; "
        "bad = [m for m in ('torch', 'h5py', 'safetensors', 'keras', 'transformers') if m in sys.modules]; "
        "assert not bad, bad; "
        "assert isinstance(tmon_core.diff, types.ModuleType) and d is tmon_core.diff, tmon_core.diff; "
        "assert tmon_core.diff.cli and callable(tmon_core.diff) and d.diff is tmon_core.diff.engine.diff"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=120)


def test_calling_tmon_core_diff_is_calling_its_diff_function(tmp_path):
    from safetensors.numpy import save_file

    import tmon_core

    save_file({"w": np.ones(3, np.float32)}, tmp_path / "a.safetensors")
    save_file({"w": np.array([1, 2, 1], np.float32)}, tmp_path / "b.safetensors")
    called = tmon_core.diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    direct = diff(tmp_path / "a.safetensors", tmp_path / "b.safetensors")
    assert called.summary["changed"] == direct.summary["changed"] == 1
    assert called.layers.max_abs_diff.tolist() == direct.layers.max_abs_diff.tolist() == [1.0]
