"""What does TMonCallback add to each training step of a Hugging Face ``Trainer`` and of a Keras
``fit``, beside the frameworks' own loggers?

(a) HF ``Trainer`` (a tiny BERT built from a config, batch 8, ``logging_steps=1`` so every logger
    has something to log at every step; HF's printer callback removed so stdout costs nothing):
    ``report_to="none"`` (bare) | ``report_to="tensorboard"`` | ``TMonCallback()`` (defaults: SQLite
    store, hardware sampler every 1 s) | ``TMonCallback(sample_interval=None)``.
(b) Keras 3 on the torch backend (an MLP, batch 32, ``verbose=0``): no callback (bare) |
    ``CSVLogger`` | ``TensorBoard(update_freq="batch")`` | ``TMonCallback()`` |
    ``TMonCallback(sample_interval=None)``. Keras' TensorBoard writes through ``tensorflow.summary``:
    without tensorflow importable its row says so (tensorflow is no tmon dependency; e.g.
    ``pip install --target DIR --no-deps tensorflow-cpu`` and ``PYTHONPATH=DIR``).

The variants are interleaved round by round (the order rotates each round), on one thread
(``torch.set_num_threads(1)``) so a busy shared machine disturbs every variant alike. A clock
callback present in every variant times the steady state (from step 10 to the last step); a
variant's µs/step is the median over rounds of its mean step time, its overhead the median over
rounds of (its time - bare's time in the same round). Target: tmon's overhead no more than the
framework's cheapest built-in logger's.

    .venv/bin/python bench/callback_overhead_hf_keras.py [--quick]
"""

from __future__ import annotations

import gc
import importlib.util
import math
import os
import statistics
import sys
import tempfile
import time
import warnings

os.environ.setdefault("KERAS_BACKEND", "torch")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, num, parse_args, table  # noqa: E402

WARMUP = 10  # steps not timed: first-call costs (allocations, lazy imports, the store's schema)
ONCE = {"on_init_end", "on_train_begin", "on_train_end", "set_model", "set_params"}  # not per step


class HookTimer:
    """Times the hooks of one callback instance (its own code only, not the writer thread it feeds).

    Wraps the instance's ``on_*`` methods that its class overrides (Keras decides whether to
    dispatch batch hooks asynchronously by whether they are overridden: that must not change).
    """

    def __init__(self, callback, base: type):
        self.total = 0.0
        for name in dir(type(callback)):
            if not name.startswith("on_") or name in ONCE:
                continue
            if getattr(type(callback), name) is getattr(base, name, None):
                continue
            self._wrap(callback, name)

    def _wrap(self, callback, name: str) -> None:
        fn = getattr(callback, name)
        perf = time.perf_counter

        def timed(*args, **kwargs):
            t0 = perf()
            try:
                return fn(*args, **kwargs)
            finally:
                self.total += perf() - t0

        setattr(callback, name, timed)


class Rounds:
    """Per variant and round: mean and median step time, and the logger's hook self-time per step."""

    def __init__(self, names: list[str]):
        self.names = names
        self.mean = {n: [] for n in names}
        self.median = {n: [] for n in names}
        self.hooks = {n: [] for n in names}

    def order(self, r: int) -> list[str]:
        k = r % len(self.names)
        return self.names[k:] + self.names[:k]

    def add(self, name: str, step_ends: list[float], hook_seconds: float | None, steps: int) -> None:
        d = [b - a for a, b in zip(step_ends[WARMUP - 1 : -1], step_ends[WARMUP:], strict=True)]
        self.mean[name].append(statistics.fmean(d))
        self.median[name].append(statistics.median(d))
        self.hooks[name].append(hook_seconds / steps if hook_seconds is not None else math.nan)

    def report(self, title: str, builtins: list[str], skipped: dict[str, str]) -> None:
        bare = self.names[0]

        def med(xs):
            return statistics.median(xs) * 1e6

        def over(series, n):
            return med([t - b for t, b in zip(series[n], series[bare], strict=True)])

        hooks = {n: med(self.hooks[n]) for n in self.names}
        cheapest = min((b for b in builtins if b in hooks), key=hooks.get, default=None)
        rows = []
        for n in self.names:
            rel = "-"
            if cheapest is not None and n != bare and hooks[cheapest] > 0:
                rel = f"{hooks[n] / hooks[cheapest]:.2f}x"
            rows.append(
                [
                    n,
                    num(med(self.mean[n]), "{:,.0f}"),
                    "-" if n == bare else num(over(self.mean, n), "{:+,.0f}"),
                    num(med(self.median[n]), "{:,.0f}"),
                    "-" if n == bare else num(over(self.median, n), "{:+,.0f}"),
                    f"{statistics.median(self.mean[n]) / statistics.median(self.mean[bare]):.3f}x",
                    "-" if n == bare else num(hooks[n], "{:,.1f}"),
                    rel,
                ]
            )
        for n, why in skipped.items():
            rows.append([n, "skipped: " + why, "", "", "", "", "", ""])
        table(
            [
                "variant",
                "mean µs/step",
                "+ vs bare",
                "median µs/step",
                "+ vs bare",
                "mean vs bare",
                "hooks µs/step",
                f"hooks vs {cheapest}",
            ],
            rows,
            title,
        )


# ---------------------------------------------------------------------------------------- (a) HF
def bench_hf(steps: int, rounds: int, tmp: str) -> None:
    import torch
    from transformers import (
        BertConfig,
        BertForSequenceClassification,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from tmon_callbacks.hf import TMonCallback

    class TokenData(torch.utils.data.Dataset):
        def __init__(self, n: int):
            g = torch.Generator().manual_seed(0)
            self.ids = torch.randint(0, 100, (n, 16), generator=g)
            self.labels = torch.randint(0, 2, (n,), generator=g)

        def __len__(self):
            return len(self.ids)

        def __getitem__(self, i):
            return {"input_ids": self.ids[i], "labels": self.labels[i]}

    class Clock(TrainerCallback):
        def __init__(self):
            self.ends: list[float] = []

        def on_step_end(self, args, state, control, **kw):
            self.ends.append(time.perf_counter())

    data = TokenData(8 * steps)
    variants = {
        "bare (report_to=none)": ("none", None),
        "report_to=tensorboard": ("tensorboard", None),
        "TMonCallback()": ("none", {}),
        "TMonCallback(sample_interval=None)": ("none", {"sample_interval": None}),
    }
    skipped = {}
    if importlib.util.find_spec("tensorboard") is None and importlib.util.find_spec("tensorboardX") is None:
        skipped["report_to=tensorboard"] = "needs tensorboard (or tensorboardX) installed"
        del variants["report_to=tensorboard"]
    rounds_ = Rounds(list(variants))
    for r in range(rounds):
        for name in rounds_.order(r):
            report_to, tmon = variants[name]
            torch.manual_seed(0)
            model = BertForSequenceClassification(
                BertConfig(
                    vocab_size=100,
                    hidden_size=32,
                    num_hidden_layers=2,
                    num_attention_heads=2,
                    intermediate_size=64,
                )
            )
            clock = Clock()
            callbacks = [clock]
            if tmon is not None:
                callbacks.append(TMonCallback(f"sqlite:///{tmp}/hf-{r}-{name[:4]}-{len(tmon)}.db", **tmon))
            args = TrainingArguments(
                output_dir=f"{tmp}/hf-out-{r}-{name[:4]}-{len(tmon or ())}",
                per_device_train_batch_size=8,
                max_steps=steps,
                logging_steps=1,
                save_strategy="no",
                report_to=report_to,
                disable_tqdm=True,
                use_cpu=True,
            )
            trainer = Trainer(model=model, args=args, train_dataset=data, callbacks=callbacks)
            trainer.remove_callback(PrinterCallback)
            logger = next(
                (
                    cb
                    for cb in trainer.callback_handler.callbacks
                    if type(cb).__name__ in ("TensorBoardCallback", "TMonCallback")
                ),
                None,
            )
            timer = HookTimer(logger, TrainerCallback) if logger is not None else None
            gc.collect()
            trainer.train()
            rounds_.add(name, clock.ends, timer.total if timer else None, steps)
    rounds_.report(
        f"(a) HF Trainer, tiny BERT (hidden 32, 2 layers), batch 8, logging_steps=1: {steps} steps x "
        f"{rounds} rounds per variant",
        ["report_to=tensorboard"],
        skipped,
    )


# ------------------------------------------------------------------------------------- (b) Keras
def bench_keras(steps: int, rounds: int, tmp: str) -> None:
    import keras
    import numpy as np

    from tmon_callbacks.keras import TMonCallback

    class Clock(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.ends = []

        def on_train_batch_end(self, batch, logs=None):
            self.ends.append(time.perf_counter())

    rng = np.random.default_rng(0)
    x = rng.random((32 * steps, 32), dtype=np.float32)
    y = (x.sum(axis=1) > 16).astype("float32")
    variants = {
        "bare (no callback)": lambda tag: None,
        "CSVLogger": lambda tag: keras.callbacks.CSVLogger(f"{tmp}/k-{tag}.csv"),
        'TensorBoard(update_freq="batch")': lambda tag: keras.callbacks.TensorBoard(
            f"{tmp}/k-tb-{tag}", update_freq="batch"
        ),
        "TMonCallback()": lambda tag: TMonCallback(f"sqlite:///{tmp}/k-{tag}.db"),
        "TMonCallback(sample_interval=None)": lambda tag: TMonCallback(
            f"sqlite:///{tmp}/k-ns-{tag}.db", sample_interval=None
        ),
    }
    skipped = {}
    if importlib.util.find_spec("tensorflow") is None:
        skipped['TensorBoard(update_freq="batch")'] = "needs tensorflow importable"
        del variants['TensorBoard(update_freq="batch")']
    rounds_ = Rounds(list(variants))
    for r in range(rounds):
        for name in rounds_.order(r):
            keras.utils.set_random_seed(0)
            model = keras.Sequential(
                [
                    keras.Input((32,)),
                    keras.layers.Dense(64, activation="relu"),
                    keras.layers.Dense(64, activation="relu"),
                    keras.layers.Dense(1),
                ]
            )
            model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="mse", metrics=["mae"])
            clock = Clock()
            logger = variants[name](f"{r}-{abs(hash(name))}")
            timer = HookTimer(logger, keras.callbacks.Callback) if logger is not None else None
            gc.collect()
            model.fit(
                x,
                y,
                batch_size=32,
                epochs=1,
                verbose=0,
                shuffle=False,
                callbacks=[clock] + ([logger] if logger is not None else []),
            )
            rounds_.add(name, clock.ends, timer.total if timer else None, steps)
    rounds_.report(
        f"(b) Keras 3 ({keras.backend.backend()} backend), MLP 32-64-64-1, batch 32, verbose=0: "
        f"{steps} steps x {rounds} rounds per variant",
        ["CSVLogger", 'TensorBoard(update_freq="batch")'],
        skipped,
    )


def main() -> None:
    args = parse_args(__doc__.split("\n\n")[0])
    header(
        "TMonCallback overhead per step in HF Trainer and Keras, beside their built-in loggers", args.quick
    )
    import torch

    torch.set_num_threads(1)
    steps, rounds = (60, 2) if args.quick else (300, 5)
    warnings.filterwarnings("ignore")
    with tempfile.TemporaryDirectory() as tmp:
        bench_hf(steps, rounds, tmp)
        bench_keras(steps * 2, rounds, tmp)


if __name__ == "__main__":
    main()
