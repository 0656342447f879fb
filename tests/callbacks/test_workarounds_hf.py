"""What ``tmon_callbacks/_workarounds/hf.py`` relies on in transformers, checked against the installed
version: when one of these fails, transformers changed an internal tmon reads, and the workaround
(not the test) needs a new way."""

import pytest

pytest.importorskip("transformers")
pytest.importorskip("accelerate")
import torch  # noqa: E402
from transformers import EarlyStoppingCallback, Trainer, TrainerCallback, TrainingArguments  # noqa: E402
from transformers.trainer_callback import CallbackHandler  # noqa: E402

from tmon_callbacks._workarounds import hf as wa  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Pairs(torch.utils.data.Dataset):
    def __len__(self):
        return 8

    def __getitem__(self, i):
        return {"x": torch.tensor([float(i), 1.0]), "labels": torch.tensor(float(i % 2))}


class Tiny(torch.nn.Module):
    def __init__(self, fail: bool = False):
        super().__init__()
        self.lin = torch.nn.Linear(2, 1)
        self.fail = fail

    def forward(self, x, labels=None):
        if self.fail:
            raise RuntimeError("boom inside the step")
        out = self.lin(x).squeeze(-1)
        return {"loss": ((out - labels) ** 2).mean(), "logits": out}


class Listener(TrainerCallback, wa.TrainListener):
    """Records what the workarounds tell it and what they find from inside HF's hooks."""

    def __init__(self):
        self.calls: list = []

    def on_init_end(self, args, state, control, **kwargs):
        self.calls.append(("init_end", wa.find_trainer(self)))

    def on_train_begin(self, args, state, control, **kwargs):
        self.calls.append(("train_begin", wa.find_trainer(self), wa.trainer_callbacks(self)))

    def on_prediction_step(self, args, state, control, **kwargs):
        self.calls.append(("prediction_step", wa.after_fit_stage()))

    def train_entered(self):
        self.calls.append("entered")

    def train_failed(self, exc):
        self.calls.append(("failed", str(exc)))

    def train_left(self):
        self.calls.append("left")

    def metrics_logged(self, split, metrics):
        self.calls.append(("log_metrics", split, dict(metrics)))


def trainer(tmp_path, listener, fail=False):
    args = TrainingArguments(
        output_dir=str(tmp_path / "out"),
        per_device_train_batch_size=4,
        max_steps=2,
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        save_strategy="no",
    )
    return Trainer(
        model=Tiny(fail), args=args, train_dataset=Pairs(), eval_dataset=Pairs(), callbacks=[listener]
    )


def test_checkpoint_prefix_is_hfs():
    from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR

    assert wa.CHECKPOINT_PREFIX == PREFIX_CHECKPOINT_DIR


def test_frames_find_the_trainer_and_its_callback_handler(tmp_path):
    listener = Listener()
    t = trainer(tmp_path, listener)
    assert listener.calls == [("init_end", t)]  # Trainer.__init__ calls on_init_end from its own frame
    assert isinstance(t.callback_handler, CallbackHandler) and listener in t.callback_handler.callbacks
    wa.watch_train(t)
    t.train()
    _, found, callbacks = next(c for c in listener.calls if c[0] == "train_begin")
    assert found is t and callbacks is t.callback_handler.callbacks  # the live list


def test_watch_train_swaps_the_class_for_a_same_named_subclass_that_reports_train_and_log_metrics(tmp_path):
    listener = Listener()
    t = trainer(tmp_path, listener)
    cls = type(t)
    wa.watch_train(t)
    sub = type(t)
    assert sub is not cls and issubclass(sub, cls) and sub.__bases__ == (cls,)
    assert (sub.__name__, sub.__qualname__, sub.__module__, sub.__doc__) == (
        cls.__name__,
        cls.__qualname__,
        cls.__module__,
        cls.__doc__,
    )
    assert set(vars(sub)) >= {"train", "log_metrics"}
    wa.watch_train(t)  # once only
    other = trainer(tmp_path, Listener())
    wa.watch_train(other)
    assert type(t) is sub and type(other) is sub  # one subclass per trainer class

    listener.calls.clear()
    t.train()
    assert listener.calls[0] == "entered" and listener.calls[-1] == "left"
    assert not any(c[0] == "failed" for c in listener.calls if isinstance(c, tuple))

    t.log_metrics("eval", {"eval_loss": 1.0, "perplexity": 2.7})
    assert listener.calls[-1] == ("log_metrics", "eval", {"eval_loss": 1.0, "perplexity": 2.7})


def test_an_exception_escaping_train_is_reported_then_raised(tmp_path):
    listener = Listener()
    t = trainer(tmp_path, listener, fail=True)
    wa.watch_train(t)
    listener.calls.clear()
    with pytest.raises(RuntimeError, match="boom"):
        t.train()
    assert listener.calls[0] == "entered" and listener.calls[-2:] == [
        ("failed", "boom inside the step"),
        "left",
    ]


def test_after_fit_stage_tells_evaluate_from_predict(tmp_path):
    listener = Listener()
    t = trainer(tmp_path, listener)
    t.evaluate()
    stages = {c[1] for c in listener.calls if c[0] == "prediction_step"}
    assert stages == {"evaluate"}
    listener.calls.clear()
    t.predict(Pairs())
    assert {c[1] for c in listener.calls if c[0] == "prediction_step"} == {"test"}
    assert wa.after_fit_stage() == "evaluate"  # outside both


def test_early_stopping_state_tmon_reads():
    cb = EarlyStoppingCallback(early_stopping_patience=2, early_stopping_threshold=0.1)
    assert (cb.early_stopping_patience, cb.early_stopping_threshold, cb.early_stopping_patience_counter) == (
        2,
        0.1,
        0,
    )
    assert not wa.early_stopping_exhausted(cb)
    cb.early_stopping_patience_counter = 2
    assert wa.early_stopping_exhausted(cb)


def test_the_trainer_methods_swapped_keep_their_signatures():
    import inspect

    assert "resume_from_checkpoint" in inspect.signature(Trainer.train).parameters
    assert list(inspect.signature(Trainer.log_metrics).parameters) == ["self", "split", "metrics"]


def test_the_gradient_checkpointing_flag_tmon_reads_exists():
    """transformers 5 renamed ``is_gradient_checkpointing`` to ``is_activation_checkpointing``;
    the run config reads whichever the model class has (_hf.run_config)."""
    from transformers import PreTrainedModel

    assert any(
        hasattr(PreTrainedModel, n) for n in ("is_activation_checkpointing", "is_gradient_checkpointing")
    )
