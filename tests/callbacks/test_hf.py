"""TMonCallback in real Hugging Face Trainer runs on CPU (a tiny BERT built from a config), read back
through the query API."""

import os
import re
import subprocess
import sys
import textwrap
import warnings

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import (  # noqa: E402
    BertConfig,
    BertForSequenceClassification,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tmon_callbacks._adapter import TMonCallbackWarning  # noqa: E402
from tmon_callbacks.hf import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import keys, open_store  # noqa: E402
from tmon_core.checkpoints import path_size  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class TokenData(torch.utils.data.Dataset):
    def __init__(self, n: int = 32, seq: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 100, (n, seq), generator=g)
        self.labels = torch.randint(0, 2, (n,), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.labels[i]}


def tiny_bert(fail_at_forward: int | None = None, fail_with=RuntimeError):
    torch.manual_seed(0)
    model = BertForSequenceClassification(
        BertConfig(
            vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32
        )
    )
    if fail_at_forward is not None:
        calls = [0]

        def fail(module, args, kwargs):
            calls[0] += 1
            if calls[0] == fail_at_forward:
                raise fail_with(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (simulated)"
                    if fail_with is torch.OutOfMemoryError
                    else "boom inside the step"
                )

        model.register_forward_pre_hook(fail, with_kwargs=True)
    return model


def args(tmp_path, **kw):
    kw.setdefault("num_train_epochs", 2)
    kw.setdefault("logging_steps", 1)
    return TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        **kw,
    )


def test_train_records_steps_logs_eval_checkpoints_config_and_completes(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=0.2, run_name="hf-test")
    trainer = Trainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        eval_dataset=TokenData(16, seed=1),
        callbacks=[cb],
        args=args(
            tmp_path,
            save_steps=3,
            save_total_limit=2,
            eval_strategy="epoch",
            weight_decay=0.01,
            learning_rate=1e-3,
        ),
    )
    trainer.train()  # 32 samples / 8 = 4 steps per epoch, 2 epochs

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    info = run.info()
    assert info["name"] == "hf-test" and info["framework"] == "hf" and info["total_steps"] == 8
    cfg = info["config"]
    assert cfg["per_device_train_batch_size"] == 8 and cfg["gradient_accumulation_steps"] == 1
    assert cfg["gradient_checkpointing"] is False and cfg["precision"] == "32-true" and cfg["bf16"] is False
    assert cfg["dataloader_num_workers"] == 0 and cfg["world_size"] == 1 and cfg["batch_size"] == 8
    assert cfg["training_args"]["learning_rate"] == 1e-3 and cfg["training_args"]["save_steps"] == 3
    assert cfg["model_config"]["hidden_size"] == 16 and cfg["model_config"]["model_type"] == "bert"
    assert cfg["optimizers"][0]["class"] == "AdamW" and cfg["optimizers"][0]["param_groups"] == 2

    # every step, at HF's global step: lr of both param groups as the optimizer used it, which is
    # what HF itself logs as learning_rate (stored once, as lr); weight decay per group; fractional
    # epoch; timings
    steps = list(range(1, 9))
    hf_lr = [h["learning_rate"] for h in trainer.state.log_history if "learning_rate" in h]
    assert len(hf_lr) == 8 and "learning_rate" not in run.metric_keys()
    for key in (keys.LR, "lr/pg1"):
        lr = run.metrics(key)
        assert lr.step.tolist() == steps and lr.value.tolist() == pytest.approx(hf_lr)
    assert lr.value.is_monotonic_decreasing and lr.value.iloc[0] == pytest.approx(1e-3)
    assert (
        run.metrics(keys.WEIGHT_DECAY).value.eq(0.01).all()
        and run.metrics("weight_decay/pg1").value.eq(0).all()
    )
    assert run.metrics(keys.MOMENTUM).value.eq(0.9).all()  # AdamW's beta1
    assert run.metrics(keys.EPOCH).value.tolist() == pytest.approx([s / 4 for s in steps])
    assert (run.metrics(keys.STEP_TIME).value > 0).all() and len(run.metrics(keys.STEP_TIME)) == 8
    assert (run.metrics(keys.DATA_TIME).value >= 0).all()

    # everything in HF's logs, under HF's names, at its steps
    loss = run.metrics(keys.LOSS)
    assert loss.step.tolist() == steps
    assert loss.value.tolist() == pytest.approx([h["loss"] for h in trainer.state.log_history if "loss" in h])
    assert run.metrics(keys.GRAD_NORM).step.tolist() == steps
    eval_loss = run.metrics("eval_loss")
    assert eval_loss.step.tolist() == [4, 8]
    assert eval_loss.value.tolist() == pytest.approx(
        [h["eval_loss"] for h in trainer.state.log_history if "eval_loss" in h]
    )
    assert run.metrics("train_loss").step.tolist() == [8]

    # checkpoints save_steps wrote, the one save_total_limit rotated away marked deleted
    ckpts = run.checkpoints()
    assert ckpts.step.tolist() == [6, 8]
    for row in ckpts.itertuples():
        assert os.path.isdir(row.path) and row.path.endswith(f"checkpoint-{row.step}")
        assert row.size_bytes == path_size(row.path) > 0
    all_ckpts = run.checkpoints(include_deleted=True)
    assert all_ckpts.step.tolist() == [3, 6, 8] and not os.path.exists(all_ckpts.path[0])

    events = run.events()
    types = [t for t in events.type if t != "sampler"]
    assert types[:2] == [ev.TRAIN_START, ev.EPOCH_START] and types[-1] == ev.TRAIN_END
    assert events[events.type == ev.TRAIN_END].data.iloc[0]["reason"] == ev.END_MAX_EPOCHS
    trainer_entry = cfg[ev.CONFIG_CALLBACKS][0]
    assert trainer_entry == {
        "name": "Trainer",
        "eval_strategy": "epoch",
        "eval_steps": None,
        "save_strategy": "steps",
        "save_steps": 3,
        "save_total_limit": 2,
        "load_best_model_at_end": False,
        "metric_for_best_model": None,
        "monitor": None,
        "mode": None,
    }
    assert [c["name"] for c in cfg[ev.CONFIG_CALLBACKS][1:]] == ["DefaultFlowCallback", "PrinterCallback"]
    assert types.count(ev.EPOCH_END) == 2 and types.count(ev.CHECKPOINT) == 3
    assert types.count(ev.VALIDATION_START) == types.count(ev.VALIDATION_END) == 2
    assert len(run.samples()) >= 1


@pytest.mark.parametrize(
    "fail_with, event_type", [(RuntimeError, ev.EXCEPTION), (torch.OutOfMemoryError, ev.OOM)]
)
def test_exception_inside_a_step_marks_failed_and_keeps_points(tmp_path, store_url, fail_with, event_type):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    with pytest.raises(fail_with):  # a trainer nobody keeps a reference to, as in Trainer(...).train()
        Trainer(
            model=tiny_bert(fail_at_forward=6, fail_with=fail_with),
            train_dataset=TokenData(32),
            callbacks=[cb],
            args=args(tmp_path, save_strategy="no"),
        ).train()
    run = open_store(store_url).run(cb.run_id)
    assert run.status == "failed"
    assert run.metrics(keys.LOSS).step.tolist() == [1, 2, 3, 4, 5]
    assert run.metrics(keys.LR).step.tolist() == [1, 2, 3, 4, 5]
    last = run.events().iloc[-1]
    assert last.type == event_type and last.step == 5
    assert last.data["type"].endswith(fail_with.__name__) and "Traceback" in last.data["traceback"]
    assert last.data["oom"] == (event_type == ev.OOM)
    assert run.info()["error"]["type"].endswith(fail_with.__name__)


def test_one_callback_two_trainings_two_runs_with_best_model_metric(tmp_path, store_url):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    ids = []
    for i in range(2):
        trainer = Trainer(
            model=tiny_bert(),
            train_dataset=TokenData(32),
            eval_dataset=TokenData(16, seed=1),
            callbacks=[cb],
            args=args(
                tmp_path / str(i),
                eval_strategy="epoch",
                save_strategy="epoch",
                load_best_model_at_end=True,
                metric_for_best_model="loss",
                run_name=f"from-args-{i}",
            ),
        )
        trainer.train()
        ids.append(cb.run_id)
    assert ids[0] != ids[1]
    store = open_store(store_url)
    for i, rid in enumerate(ids):
        run = store.run(rid)
        assert run.status == "completed" and run.metrics(keys.LOSS).step.tolist() == list(range(1, 9))
        assert run.info()["name"] == f"from-args-{i}"  # HF's run_name, as W&B and MLflow get it
        # each checkpoint carries the metric HF picks the best model by, as evaluated at its step
        ckpts = run.checkpoints()
        eval_loss = run.metrics("eval_loss")
        assert ckpts.step.tolist() == eval_loss.step.tolist() == [4, 8]
        assert (ckpts.monitor == "eval_loss").all()
        assert ckpts.monitor_value.tolist() == pytest.approx(eval_loss.value.tolist())


def test_callback_added_after_construction(tmp_path, store_url):
    """Without the Trainer's constructor, the exception of the first train() goes unseen: the next
    train() ends that run failed (the exception unknown) and is itself watched from the start."""
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    trainer = Trainer(
        model=tiny_bert(fail_at_forward=3),
        train_dataset=TokenData(32),
        args=args(tmp_path, num_train_epochs=1, save_strategy="no"),
    )
    trainer.add_callback(cb)
    with pytest.raises(RuntimeError):
        trainer.train()
    first = cb.run_id
    trainer.train()  # the hook fired once: this one runs through
    store = open_store(store_url)
    assert store.run(cb.run_id).status == "completed"
    run = store.run(first)
    assert run.status == "failed" and run.info()["error"]["type"] == "unknown"
    assert run.metrics(keys.LOSS).step.tolist() == [1, 2]


@pytest.mark.slow
def test_torchrun_two_processes_write_one_run_once(tmp_path, store_url):
    """Under torchrun every process runs the callback: process 0 writes metrics, events and
    checkpoints; the other learns the run id and writes nothing (same node: one sampler)."""
    script = textwrap.dedent(f"""
        import sys, torch
        torch.set_num_threads(1)
        sys.path.insert(0, {REPO!r})
        sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r})
        from transformers import Trainer, TrainingArguments
        from test_hf import TokenData, tiny_bert
        from tmon_callbacks.hf import TMonCallback
        cb = TMonCallback({store_url!r}, flush_interval=0.1, sample_interval=0.2)
        args = TrainingArguments(output_dir={str(tmp_path / "out")!r}, per_device_train_batch_size=4,
                                 num_train_epochs=1, logging_steps=1, save_steps=2, report_to="none",
                                 disable_tqdm=True, use_cpu=True)
        Trainer(model=tiny_bert(), args=args, train_dataset=TokenData(32), callbacks=[cb]).train()
        print("RANK", args.process_index, cb.run_id, cb.session.writes_metrics, flush=True)
    """)
    (tmp_path / "train.py").write_text(script)
    torchrun = os.path.join(os.path.dirname(sys.executable), "torchrun")
    proc = subprocess.run(
        [torchrun, "--standalone", "--nproc_per_node=2", str(tmp_path / "train.py")],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONWARNINGS": "ignore"},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    # found anywhere in the output: two processes share it, and another line may lack its newline
    ranks = sorted(list(m) for m in re.findall(r"RANK (\d+) (\S+) (True|False)", proc.stdout))
    assert len(ranks) == 2 and ranks[0][1] == ranks[1][1]  # one run id on both processes
    assert [r[2] for r in ranks] == ["True", "False"]
    store = open_store(store_url)
    assert len(store.runs()) == 1
    run = store.run(ranks[0][1])
    assert run.status == "completed" and run.info()["config"]["world_size"] == 2
    assert run.metrics(keys.LOSS).step.tolist() == [1, 2, 3, 4]  # 32 samples / (2 x 4) per step, once
    assert run.metrics(keys.LR).step.tolist() == [1, 2, 3, 4]
    assert run.checkpoints().step.tolist() == [2, 4]
    assert run.events(ev.TRAIN_START).shape[0] == 1


def test_constructor_rejects_bad_options_by_name():
    with pytest.raises(ValueError, match="sample_interval"):
        TMonCallback(sample_interval=0)
    with pytest.raises(ValueError, match="flush_interval"):
        TMonCallback(flush_interval=-1)
    with pytest.raises(ValueError, match="log_grad_norm"):
        TMonCallback(log_grad_norm="yes")


@pytest.mark.parametrize("max_grad_norm", [0.0, 1.0])
def test_log_grad_norm_records_every_step_unless_hf_clips(tmp_path, store_url, max_grad_norm):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None, log_grad_norm=True)
    trainer = Trainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        callbacks=[cb],
        args=args(
            tmp_path, num_train_epochs=1, save_strategy="no", logging_steps=2, max_grad_norm=max_grad_norm
        ),
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    run = open_store(store_url).run(cb.run_id)
    grad = run.metrics(keys.GRAD_NORM)
    hf = [h["grad_norm"] for h in trainer.state.log_history if "grad_norm" in h]  # before clipping
    warned = [w for w in caught if issubclass(w.category, TMonCallbackWarning)]
    if max_grad_norm:  # tmon could only measure after clipping: HF's own values, at its logging steps
        assert grad.step.tolist() == [2, 4] and grad.value.tolist() == pytest.approx(hf)
        assert len(warned) == 1 and "max_grad_norm" in str(warned[0].message)
    else:
        assert grad.step.tolist() == [1, 2, 3, 4]  # every step, not only HF's logging steps 2 and 4
        assert grad.value.iloc[[1, 3]].tolist() == pytest.approx(hf, rel=1e-4)
        assert not warned


class OneShot(torch.utils.data.IterableDataset):
    """Token samples that can be read once: a second epoch finds no data."""

    def __init__(self, n: int):
        self.items = iter(TokenData(n))

    def __iter__(self):
        yield from self.items


class StopAt(TrainerCallback):
    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


@pytest.mark.parametrize("case", ["max_epochs", "max_steps", "should_stop", "data_exhausted"])
def test_train_end_says_why_the_training_ended(tmp_path, store_url, case):
    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    kw, data, callbacks = {"save_strategy": "no"}, TokenData(32), [cb]
    if case == "max_steps":
        kw["max_steps"] = 3
    elif case == "should_stop":
        callbacks.append(StopAt(3))
    elif case == "data_exhausted":  # 20 samples, batch 8: steps 1-3, then an epoch with nothing in it
        kw.update(
            max_steps=10, accelerator_config={"dispatch_batches": False}
        )  # dispatching fails on no data
        data = OneShot(20)
    trainer = Trainer(model=tiny_bert(), train_dataset=data, callbacks=callbacks, args=args(tmp_path, **kw))
    trainer.train()
    end = open_store(store_url).run(cb.run_id).events(ev.TRAIN_END)
    expected_step = {"max_epochs": 8, "max_steps": 3, "should_stop": 3, "data_exhausted": 3}[case]
    assert end.step.tolist() == [trainer.state.global_step] == [expected_step]
    assert end.data[0]["reason"] == case and case in ev.END_REASONS


def test_early_stopping_recorded_with_its_settings_and_the_best_model(tmp_path, store_url):
    """HF's EarlyStoppingCallback stops the run: train_end says so with the callback's settings; the
    run's config lists it and HF's own best-model and checkpoint settings, which advice reads."""
    from transformers import EarlyStoppingCallback

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    stopper = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.5)
    trainer = Trainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        eval_dataset=TokenData(16, seed=1),
        callbacks=[cb, stopper],
        compute_metrics=lambda p: {"score": 1.0},  # never improves
        args=args(
            tmp_path,
            num_train_epochs=5,
            eval_strategy="steps",
            eval_steps=2,
            save_steps=2,
            save_total_limit=1,
            load_best_model_at_end=True,
            metric_for_best_model="score",
        ),
    )
    trainer.train()
    assert trainer.state.global_step == 6  # best at step 2, no improvement at 4 and 6: stopped of 20 steps

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    end = run.events(ev.TRAIN_END)
    assert end.step.tolist() == [6]
    assert end.data[0] == {
        "reason": ev.END_EARLY_STOPPING,
        "callback": "EarlyStoppingCallback",
        "monitor": "eval_score",
        "mode": "max",
        "patience": 2,
        "threshold": 0.5,
        "max_steps": 20,
        "best_model_checkpoint": trainer.state.best_model_checkpoint,
        "best_metric": 1.0,
    }
    assert end.data[0]["best_model_checkpoint"].endswith("checkpoint-2")
    callbacks = run.info()["config"][ev.CONFIG_CALLBACKS]
    assert callbacks[0] == {
        "name": "Trainer",
        "eval_strategy": "steps",
        "eval_steps": 2,
        "save_strategy": "steps",
        "save_steps": 2,
        "save_total_limit": 1,
        "load_best_model_at_end": True,
        "metric_for_best_model": "score",
        "monitor": "eval_score",
        "mode": "max",
    }
    assert {
        "name": "EarlyStoppingCallback",
        "monitor": "eval_score",
        "mode": "max",
        "patience": 2,
        "threshold": 0.5,
    } in callbacks
    assert run.metrics("eval_score").step.tolist() == [2, 4, 6]


def test_evaluation_after_training_goes_into_the_run(tmp_path, store_url):
    """run_clm.py's ending: train(), then evaluate(), perplexity from its eval_loss, log_metrics and
    save_metrics; then a predict(). What reaches callbacks is recorded into the ended run, at its last
    step, between evaluation_start and evaluation_end, its status kept."""
    import math

    cb = TMonCallback(store_url, flush_interval=0.1, sample_interval=None)
    trainer = Trainer(
        model=tiny_bert(),
        train_dataset=TokenData(32),
        eval_dataset=TokenData(16, seed=1),
        callbacks=[cb],
        args=args(tmp_path, save_strategy="no"),
    )
    trainer.train()
    metrics = trainer.evaluate()
    metrics["perplexity"] = math.exp(metrics["eval_loss"])
    trainer.log_metrics("eval", metrics)  # prints only: no callback sees it
    trainer.save_metrics("eval", metrics)
    predicted = trainer.predict(TokenData(8, seed=2))

    run = open_store(store_url).run(cb.run_id)
    assert run.status == "completed"
    eval_loss = run.metrics("eval_loss")
    assert eval_loss.step.tolist() == [8] and eval_loss.value.tolist() == pytest.approx(
        [metrics["eval_loss"]]
    )
    assert run.metrics("eval_runtime").step.tolist() == [8]
    assert run.metrics("test_loss").value.tolist() == pytest.approx([predicted.metrics["test_loss"]])
    # handed to no callback: it reaches tmon through Trainer.log_metrics, beside eval_loss
    assert run.metrics("perplexity").step.tolist() == [8]
    assert run.metrics("perplexity").value.tolist() == pytest.approx([math.exp(metrics["eval_loss"])])
    events = run.events()
    after = events[events.type.isin([ev.TRAIN_END, ev.EVALUATION_START, ev.EVALUATION_END])]
    # evaluate(); what the script added before log_metrics (perplexity); predict()
    assert after.type.tolist() == [ev.TRAIN_END] + [ev.EVALUATION_START, ev.EVALUATION_END] * 3
    assert [d["stage"] for d in after.data.iloc[1:]] == ["evaluate", "evaluate"] * 2 + ["test", "test"]
    assert (after.step == 8).all()
    # the evaluations did not read as a second validation inside the fit
    assert ev.VALIDATION_START not in events.type.tolist()
