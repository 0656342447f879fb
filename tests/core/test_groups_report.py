"""The group report, ``tmon report --group``, ``tmon runs --group`` and ``tmon groups``: on trials
written by the Recorder (exact outcomes) and on a real sweep of tiny Lightning fits."""

import json
import math

import pytest

import tmon_core
from tmon_core import Recorder, open_store
from tmon_core.analysis import load_report
from tmon_core.cli import main


def trial(url, name, hparams, val, loss=None, group="sweep", status="completed", steps=30):
    """A finished trial: ``val(step)`` gives val_loss every 5th step, ``loss(step)`` the loss."""
    rec = Recorder(url, run_name=name, group=group, config={"hparams": hparams}, flush_interval=0.05)
    for s in range(steps):
        rec.log({"loss": loss(s) if loss else 1.0 / (s + 1)}, s)
        if s % 5 == 4:
            rec.log({"val_loss": val(s)}, s)
    rec.close(status, {"type": "RuntimeError", "message": "boom"} if status == "failed" else None)
    return rec


def cli(capsys, *argv):
    capsys.readouterr()
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_the_best_trial_and_what_went_with_the_outcome(store_url):
    # val_loss grows with lr; adam does better than sgd at the same lr
    plan = [(0.001, "adam"), (0.003, "sgd"), (0.01, "adam"), (0.03, "sgd"), (0.1, "adam"), (0.3, "sgd")]
    for lr, opt in plan:
        bonus = 0.0 if opt == "adam" else 0.5
        trial(
            store_url,
            f"lr={lr}",
            {"lr": lr, "optimizer": opt, "width": 32},
            lambda s, lr=lr, b=bonus: lr + b + 1 / (s + 1),
        )
    gr = tmon_core.group_report("sweep", store=store_url)
    assert (gr.metric, gr.mode) == ("val_loss", "min")
    assert gr.best["name"] == "lr=0.001" and gr.best["settings"] == {"lr": 0.001, "optimizer": "adam"}
    assert gr.best["value"] == pytest.approx(0.001 + 1 / 30) and gr.best["step"] == 29
    lr, opt = gr.correlations
    assert lr["setting"] == "lr" and lr["kind"] == "numeric" and lr["trials"] == 6
    assert lr["rho"] > 0.5 and lr["better"] == "lower"  # lower lr, lower val_loss
    assert opt["kind"] == "categorical" and opt["best_value"] == "adam"
    assert [m["trials"] for m in opt["per_value"]] == [3, 3]
    assert gr.shared == {"width": 32}
    assert gr.trials.name.tolist()[0] == "lr=0.001" and list(gr.trials.columns[4:6]) == ["lr", "optimizer"]
    text = str(gr)
    assert "best: lr=0.001" in text and "a lower lr went with a lower val_loss" in text
    assert "same in every trial: width=32" in text and "best: adam" in text
    doc = json.loads(gr.to_json())
    assert doc["best"]["run"] == gr.best["run"] and len(doc["trials"]) == 6


def test_under_four_trials_no_correlation_is_claimed(store_url):
    for lr in (0.1, 0.01, 0.001):
        trial(store_url, f"lr={lr}", {"lr": lr}, lambda s, lr=lr: lr)
    gr = tmon_core.group_report("sweep", store=store_url)
    assert gr.best["name"] == "lr=0.001"
    (c,) = gr.correlations
    assert c["kind"] == "too_few" and "rho" not in c
    assert "lr: too few trials (3 with a val_loss and a lr; 4 needed)" in str(gr)


def test_the_mode_follows_the_metric_name_and_can_be_given(store_url):
    for i, acc in enumerate((0.7, 0.9, 0.8)):
        rec = Recorder(
            store_url, run_name=f"t{i}", group="sweep", config={"hparams": {"seed": i}}, flush_interval=0.05
        )
        rec.log({"val_acc": acc - 0.1}, 0)
        rec.log({"val_acc": acc}, 1)
        rec.close()
    gr = tmon_core.group_report("sweep", metric="val_acc", store=store_url)
    assert gr.mode == "max" and gr.best["name"] == "t1" and gr.best["value"] == 0.9
    assert tmon_core.group_report("sweep", metric="val_acc", mode="min", store=store_url).best[
        "value"
    ] == pytest.approx(0.6)


def test_trials_that_failed_went_nan_or_diverged_are_named_with_their_own_reports_words(store_url):
    trial(store_url, "fine", {"lr": 0.01}, lambda s: 0.5)
    trial(store_url, "failed", {"lr": 0.02}, lambda s: 0.6, status="failed")
    # the loss goes NaN at step 12: the trial's own report says so
    trial(
        store_url,
        "nan",
        {"lr": 10.0},
        lambda s: 0.4 if s < 10 else math.nan,
        loss=lambda s: math.nan if s >= 12 else 1.0,
    )
    gr = tmon_core.group_report("sweep", store=store_url)
    kinds = {p["name"]: p["kind"] for p in gr.problems}
    assert kinds["failed"] == "failed" and kinds["nan"] == "nan" and "fine" not in kinds
    nan = next(p for p in gr.problems if p["kind"] == "nan")
    report = open_store(store_url).run(nan["run"])
    assert nan["title"] in [f.title for f in load_report(report).findings]  # the trial's report, reused
    # its best val_loss (0.4, before the NaN) is the group's best: said, with what happened after
    assert gr.best["name"] == "nan" and gr.best["problems"] == ["nan"]
    assert "but it then nan" in str(gr)
    assert gr.trials.set_index("name").problems.to_dict() == {
        "nan": ["nan"],
        "fine": [],
        "failed": ["failed"],
    }


def test_trial_reports_are_saved_and_reused(store_url):
    recs = [trial(store_url, f"t{i}", {"lr": 0.1 * (i + 1)}, lambda s, i=i: 0.1 * (i + 1)) for i in range(2)]
    tmon_core.group_report("sweep", store=store_url)
    saved = [load_report(r.run_id, store=store_url) for r in recs]
    assert all(s is not None for s in saved)
    tmon_core.group_report("sweep", store=store_url)
    assert [load_report(r.run_id, store=store_url).created_at for r in recs] == [s.created_at for s in saved]
    # a trial still running is reported on (its status says so) but its provisional report is not kept
    live = Recorder(
        store_url, run_name="live", group="sweep", config={"hparams": {"lr": 0.5}}, flush_interval=0.05
    )
    live.log({"val_loss": 0.01}, 0)
    live.flush()
    gr = tmon_core.group_report("sweep", store=store_url)
    assert gr.best["name"] == "live" and gr.doc["status_counts"] == {"completed": 2, "running": 1}
    assert load_report(live.run_id, store=store_url) is None
    live.close()


def test_clear_errors(store_url):
    trial(store_url, "a", {"lr": 0.1}, lambda s: 0.1)
    with pytest.raises(KeyError, match=r"no runs in group 'nope' .*its groups: 'sweep'"):
        tmon_core.group_report("nope", store=store_url)
    with pytest.raises(
        KeyError, match=r"no trial of group 'sweep' recorded 'val_acc'; their metrics: loss, val_loss"
    ):
        tmon_core.group_report("sweep", metric="val_acc", store=store_url)
    with pytest.raises(ValueError, match="mode must be 'min' or 'max', received mode='best'"):
        tmon_core.group_report("sweep", mode="best", store=store_url)
    with pytest.raises(ValueError, match="group must be a group's name"):
        tmon_core.group_report(None, store=store_url)


def test_the_commands(store_url, capsys):
    for lr in (0.1, 0.01, 0.001, 0.0001):
        trial(store_url, f"lr={lr}", {"lr": lr}, lambda s, lr=lr: lr)
    trial(store_url, "elsewhere", {"lr": 1.0}, lambda s: 9.0, group="other")
    Recorder(store_url, run_name="no-group", flush_interval=0.05).close()

    code, out, _ = cli(capsys, "--store", store_url, "runs", "--group", "sweep")
    header, *rows = out.splitlines()
    assert code == 0 and header.split()[:5] == ["ID", "NAME", "STATUS", "FRAMEWORK", "GROUP"]
    assert [r.split()[1] for r in rows] == ["lr=0.0001", "lr=0.001", "lr=0.01", "lr=0.1"]
    code, out, _ = cli(capsys, "--store", store_url, "runs", "--json")
    runs = json.loads(out)
    assert [r["group"] for r in runs] == [None, "other", "sweep", "sweep", "sweep", "sweep"]
    assert runs[0]["name"] == "no-group" and runs[1]["steps"] == 30
    code, out, _ = cli(capsys, "--store", store_url, "show", "lr=0.1")
    assert code == 0 and "group     sweep\n" in out
    code, out, _ = cli(capsys, "--store", store_url, "export", "lr=0.1", "--format", "json")
    assert json.loads(out)["run"]["group"] == "sweep"
    code, out, _ = cli(capsys, "--store", store_url, "runs", "--group", "nope")
    assert code == 0 and out.startswith("no runs in group 'nope'")

    code, out, _ = cli(capsys, "--store", store_url, "groups", "--metric", "val_loss")
    header, *rows = out.splitlines()
    assert header.split()[:3] == ["GROUP", "RUNS", "RUNNING"] and header.endswith("BEST val_loss")
    assert rows[0].split()[:2] == ["other", "1"] and rows[1].split()[:2] == ["sweep", "4"]
    assert rows[1].endswith("0.0001 (lr=0.0001)")
    code, out, _ = cli(capsys, "--store", store_url, "groups", "--json")
    assert [(g["group"], g["runs"], g["completed"]) for g in json.loads(out)] == [
        ("other", 1, 1),
        ("sweep", 4, 4),
    ]

    code, out, _ = cli(capsys, "--store", store_url, "report", "--group", "sweep")
    assert code == 0 and "best: lr=0.0001" in out and "lr: rank correlation +1.00" in out
    code, out, _ = cli(
        capsys, "--store", store_url, "report", "--group", "sweep", "--json", "--metric", "loss"
    )
    doc = json.loads(out)
    assert doc["metric"] == "loss" and doc["group"] == "sweep" and len(doc["trials"]) == 4

    code, _, err = cli(capsys, "--store", store_url, "report", "latest", "--group", "sweep")
    assert code == 1 and "give a run or --group, not both" in err
    code, _, err = cli(capsys, "--store", store_url, "report", "--metric", "loss")
    assert code == 1 and "--metric and --mode go with --group" in err
    code, _, err = cli(capsys, "--store", store_url, "report", "--group", "nope")
    assert code == 1 and "no runs in group 'nope'" in err


# ---------------------------------------------------------------------------- a real sweep
@pytest.mark.slow
def test_a_real_lightning_sweep(tmp_path, store_url, one_torch_thread, capsys):
    """Five tiny Lightning fits in one group, lr from 0.001 to 5 (which goes to inf/NaN): the report
    names the best trial, says lr went with the outcome, and flags the one that blew up."""
    lp = pytest.importorskip("lightning.pytorch")
    import torch

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    Model, Data = make()
    lrs = (0.001, 0.003, 0.01, 0.03, 5.0)
    for lr in lrs:
        torch.manual_seed(0)
        cb = TMonCallback(
            store_url, group="sweep-lr", run_name=f"lr={lr:g}", sample_interval=None, widget=False
        )
        lp.Trainer(
            max_epochs=2,
            callbacks=[cb],
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            enable_checkpointing=False,
            log_every_n_steps=1,
            default_root_dir=str(tmp_path),
        ).fit(Model(lr=lr), Data(n=256, batch_size=16))
    store = open_store(store_url)
    trials = tmon_core.runs(store_url, group="sweep-lr")
    assert len(trials) == 5 and (trials.status == "completed").all()
    finite = {}
    for r in trials.itertuples():
        v = store.run(r.id).metrics("val_loss").value
        if v.notna().any() and math.isfinite(v.min()):
            finite[r.name] = v.min()
    gr = tmon_core.group_report("sweep-lr", store=store_url)
    assert gr.best["name"] == min(finite, key=finite.get) and gr.best["value"] == pytest.approx(
        min(finite.values())
    )
    (lr,) = gr.correlations  # the one setting that varied
    assert (
        lr["setting"] == "lr" and lr["better"] == "higher" and lr["rho"] <= -0.5
    )  # up to 0.03, higher was better
    blown = {p["name"]: p["kind"] for p in gr.problems}
    assert set(blown) == {"lr=5"} and blown["lr=5"] in ("nan", "diverged")
    code, out, _ = cli(capsys, "--store", store_url, "report", "--group", "sweep-lr")
    assert code == 0 and f"best: {gr.best['name']}" in out and "lr=5" in out.split("problems:")[1]
    store.close()


@pytest.mark.slow
def test_an_hf_sweep_compares_its_training_arguments(tmp_path, store_url, one_torch_thread):
    """Four HF trials that differ in learning_rate (and, as a sweep gives them, in output_dir): the
    one setting that varied is args.learning_rate; where each trial wrote is not a setting."""
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    from transformers import Trainer

    from tests.callbacks.test_hf import TokenData, args, tiny_bert
    from tmon_callbacks.hf import TMonCallback

    for i, lr in enumerate((1e-4, 1e-3, 1e-2, 3e-2)):
        cb = TMonCallback(store_url, group="hf-sweep", sample_interval=None, report="off", widget=False)
        trial_dir = tmp_path / f"trial{i}"
        Trainer(
            model=tiny_bert(),
            train_dataset=TokenData(32),
            args=args(trial_dir, num_train_epochs=1, learning_rate=lr),
            callbacks=[cb],
        ).train()
    gr = tmon_core.group_report("hf-sweep", store=store_url)
    assert gr.metric == "loss" and gr.doc["varied"] == ["args.learning_rate"]
    assert gr.shared["args.per_device_train_batch_size"] == 8 and "args.output_dir" not in gr.shared
    (c,) = gr.correlations
    assert c["setting"] == "args.learning_rate" and c["kind"] == "numeric" and c["trials"] == 4
    assert sorted(gr.trials["args.learning_rate"]) == [1e-4, 1e-3, 1e-2, 3e-2]
