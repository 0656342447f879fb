"""Hugging Face Trainer: what tmon records is exactly what the Trainer logged (issue 15).

The reference is HF's own record of the run, ``trainer_state.json``'s ``log_history`` (written by
``trainer.save_state()`` at the end, as run_clm.py does, after the final ``evaluate()``). One
parametrised test, a row per configuration: the harness compares every key HF logged, at every
step, value by value; the deliberate differences are the rules below, each with its reason. A row
also checks what the log cannot show: why the run ended, the callbacks in its config, the
evaluation after the fit between its events.
"""

from __future__ import annotations

import json
import math
import os

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import (  # noqa: E402
    EarlyStoppingCallback,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from tests.e2e.parity.harness import (  # noqa: E402
    AtReferenceSteps,
    Rename,
    RepeatedInEveryRow,
    Rule,
    compare,
    from_records,
    read_run,
)
from tmon_callbacks.hf import TMonCallback  # noqa: E402
from tmon_core import events as ev  # noqa: E402
from tmon_core import open_store  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


#: the rules every HF comparison states
LR = Rename(
    "lr",
    "learning_rate",
    why="HF's learning_rate is stored once, as tmon's cross-framework lr (the "
    "rule in tmon_callbacks/hf.py): param group 0's lr of the step just done",
)
EPOCH_ROWS = RepeatedInEveryRow(
    keys=("epoch",),
    why=(
        "HF writes the fractional epoch into every row it logs (loss, eval, the train summary, evaluate() after the "
        "fit), several at one step; tmon records the epoch of each optimizer step: at each step HF logged, tmon's "
        "value must be one of HF's"
    ),
)
THROTTLED = AtReferenceSteps(
    keys=("learning_rate", "epoch"),
    why=("tmon records lr and epoch at every optimizer step; HF logs them every logging_steps"),
)


class AfterStep(Rule):
    """Only the framework's rows after ``step`` belong to this run: a Trainer resumed from a checkpoint
    carries the checkpoint's log history (the steps of the run that wrote it) into its own."""

    def __init__(self, step: int, why: str = ""):
        super().__init__(why=why)
        self.step = step

    def points(self, key, tmon_pts, ref_pts):
        return tmon_pts, [(s, v) for s, v in ref_pts if s > self.step]


class Tokens(torch.utils.data.Dataset):
    """Random token sequences, the labels the inputs (causal LM, as run_clm.py's blocks)."""

    def __init__(self, n: int, seq: int = 8, seed: int = 0):
        g = torch.Generator().manual_seed(seed)
        self.ids = torch.randint(0, 64, (n, seq), generator=g)

    def __len__(self):
        return len(self.ids)

    def __getitem__(self, i):
        return {"input_ids": self.ids[i], "labels": self.ids[i]}


class StopAt(TrainerCallback):
    """Ends the training at ``step`` (after HF saved its checkpoint there): the run a resume continues."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def tiny_gpt2():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))


# each row: (id, TrainingArguments kwargs, extra); 48 samples at batch 8 = 6 batches an epoch
ROWS = [
    ("epochs-eval-save-by-epoch", dict(num_train_epochs=2, eval_strategy="epoch", save_strategy="epoch"), {}),
    (
        "max-steps-eval-save-by-steps",
        dict(max_steps=10, eval_strategy="steps", eval_steps=4, save_steps=4, save_total_limit=1),
        {},
    ),
    (
        "accumulate-2-logging-3",
        dict(
            num_train_epochs=2,
            gradient_accumulation_steps=2,
            logging_steps=3,
            eval_strategy="steps",
            eval_steps=3,
        ),
        {},
    ),  # 3 optimizer steps an epoch
    (
        "cosine-warmup",
        dict(
            max_steps=12,
            lr_scheduler_type="cosine",
            warmup_steps=4,
            learning_rate=5e-3,
            eval_strategy="steps",
            eval_steps=6,
        ),
        {},
    ),
    (
        "resume-from-checkpoint",
        dict(num_train_epochs=2, save_steps=4, lr_scheduler_type="cosine", warmup_steps=2),
        {"resume_at": 4},
    ),
    (
        "early-stopping-best-model",
        dict(
            num_train_epochs=10,
            eval_strategy="steps",
            eval_steps=2,
            save_steps=2,
            save_total_limit=2,
            load_best_model_at_end=True,
            metric_for_best_model="score",
        ),
        {"early": True},
    ),
    ("evaluate-after-train", dict(num_train_epochs=1, eval_strategy="epoch"), {"evaluate": True}),
]
SLOW_ROWS = {"resume-from-checkpoint", "early-stopping-best-model"}


def _params():
    for row in ROWS:
        marks = [pytest.mark.slow] if row[0] in SLOW_ROWS else []
        yield pytest.param(*row[1:], id=row[0], marks=marks)


def _trainer(tmp_path, store_url, args_kw, extra, callbacks=()):
    cb = TMonCallback(store_url, flush_interval=0.2, sample_interval=None, widget=False, report="off")
    kw = dict(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=8,
        per_device_eval_batch_size=8,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        seed=0,
        **{"logging_steps": 1, **args_kw},
    )
    early = [EarlyStoppingCallback(early_stopping_patience=2)] if extra.get("early") else []
    trainer = Trainer(
        model=tiny_gpt2(),
        args=TrainingArguments(**kw),
        train_dataset=Tokens(48),
        eval_dataset=Tokens(16, seed=1),
        callbacks=[cb, *early, *callbacks],
        # never improves: EarlyStoppingCallback stops after patience evaluations
        compute_metrics=(lambda p: {"score": 1.0}) if extra.get("early") else None,
    )
    return cb, trainer


def _log_history(trainer) -> list[dict]:
    """HF's own file: trainer_state.json as ``trainer.save_state()`` writes it."""
    trainer.save_state()
    with open(os.path.join(trainer.args.output_dir, "trainer_state.json")) as f:
        return json.load(f)["log_history"]


@pytest.mark.parametrize("args_kw, extra", list(_params()))
def test_tmon_records_what_the_trainer_logged(tmp_path, store_url, args_kw, extra):
    rules = [LR, THROTTLED, EPOCH_ROWS]
    first = None
    if extra.get(
        "resume_at"
    ):  # a first training stopped at the checkpoint, then a new Trainer resumes from it
        k = extra["resume_at"]
        first, trainer = _trainer(tmp_path, store_url, args_kw, extra, callbacks=[StopAt(k)])
        trainer.train()
        compare(
            read_run(store_url, first.run_id),
            from_records(_log_history(trainer)),
            rules,
            require=["loss", "learning_rate"],
        ).check()
        rules.append(
            AfterStep(
                k,
                why="the resumed Trainer's log history starts with the checkpoint's, which is "
                "the first run's record",
            )
        )
    cb, trainer = _trainer(tmp_path, store_url, args_kw, extra)
    trainer.train(
        resume_from_checkpoint=str(tmp_path / "out" / f"checkpoint-{extra['resume_at']}")
        if first is not None
        else None
    )
    if extra.get("evaluate"):  # run_clm.py's ending
        metrics = trainer.evaluate()
        metrics["perplexity"] = math.exp(metrics["eval_loss"])
        trainer.log_metrics("eval", metrics)
        trainer.save_metrics("eval", metrics)
    history = _log_history(trainer)
    tmon = read_run(store_url, cb.run_id)
    require = ["loss", "learning_rate", "epoch", "grad_norm", "train_loss", "train_runtime"]
    if args_kw.get("eval_strategy", "no") != "no":
        require.append("eval_loss")
    compare(tmon, from_records(history), rules, require=require).check()

    run = open_store(store_url).run(cb.run_id)
    state = trainer.state
    assert run.status == "completed"
    resumed_at = extra.get("resume_at", 0)
    assert run.metrics("lr").step.tolist() == list(range(resumed_at + 1, state.global_step + 1))
    assert run.metrics("epoch").step.tolist() == run.metrics("lr").step.tolist(), "every optimizer step"
    assert "learning_rate" not in run.metric_keys()

    events = run.events()
    end = events[events.type == ev.TRAIN_END]
    assert end.step.tolist() == [state.global_step]
    reason = end.data.iloc[0]["reason"]
    if extra.get("early"):
        assert state.global_step < state.max_steps
        assert (reason, end.data.iloc[0]["patience"], end.data.iloc[0]["monitor"]) == (
            ev.END_EARLY_STOPPING,
            2,
            "eval_score",
        )
        assert end.data.iloc[0]["best_model_checkpoint"] == os.path.abspath(state.best_model_checkpoint)
    else:
        assert reason == (ev.END_MAX_STEPS if "max_steps" in args_kw else ev.END_MAX_EPOCHS)
    if first is not None:
        first_end = open_store(store_url).run(first.run_id).events(ev.TRAIN_END)
        assert first_end.data[0]["reason"] == ev.END_SHOULD_STOP and first_end.step.tolist() == [
            extra["resume_at"]
        ]

    config = run.info()["config"][ev.CONFIG_CALLBACKS]
    hf = config[0]
    assert hf["name"] == "Trainer" and hf["save_total_limit"] == args_kw.get("save_total_limit")
    assert hf["load_best_model_at_end"] is bool(args_kw.get("load_best_model_at_end"))
    assert "TMonCallback" not in [c["name"] for c in config]
    if extra.get("early"):
        assert hf["metric_for_best_model"] == "score" and (hf["monitor"], hf["mode"]) == ("eval_score", "max")
        assert {
            "name": "EarlyStoppingCallback",
            "monitor": "eval_score",
            "mode": "max",
            "patience": 2,
            "threshold": 0.0,
        } in config

    if extra.get("evaluate"):
        kinds = events[events.type.isin([ev.EVALUATION_START, ev.EVALUATION_END])]
        # evaluate(), then what run_clm.py added before log_metrics("eval", ...) (perplexity, eval_samples)
        assert [(t, d["stage"], s) for t, d, s in zip(kinds.type, kinds.data, kinds.step)] == [
            (ev.EVALUATION_START, "evaluate", state.global_step),
            (ev.EVALUATION_END, "evaluate", state.global_step),
        ] * 2
        # in the fit (eval_strategy="epoch"), then evaluate() after it: two values at the last step, as HF logged
        assert [s for s, _ in tmon["eval_loss"]] == [state.global_step] * 2
        # what run_clm.py saves beside trainer_state.json, perplexity included (it reaches tmon through
        # Trainer.log_metrics, not a callback)
        with open(os.path.join(trainer.args.output_dir, "eval_results.json")) as f:
            saved = {k: [(state.global_step, v)] for k, v in json.load(f).items() if k != "epoch"}
        tmon = read_run(store_url, cb.run_id)
        only_last = {
            k: [pts[-1]] for k, pts in tmon.items()
        }  # the value after the fit, not the fit's own eval
        compare(only_last, saved, [], require=["eval_loss", "eval_runtime", "perplexity"]).check()
