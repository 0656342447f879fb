"""What does ``tmon_core.track()`` add to each step of a plain PyTorch loop, next to writing the same
records by hand with ``Recorder.log`` and next to Lightning's ``TMonCallback``?

One tiny model (examples/tiny_lightning.py's MLP: SGD with momentum, a StepLR stepped every batch,
batch 16, CPU, one torch thread) trained for ``--steps`` optimizer steps in one epoch, in five
variants, interleaved round by round in a rotating order so the other tenants of this machine
disturb every variant alike (wandb is not installed; its ``run.log`` would sit with the hand-written
``Recorder.log``):

  loop: bare             the plain loop, no monitoring
  loop: Recorder.log     the same loop recording what ``track`` records, written by hand: the step
                         timed with ``perf_counter``, lr/momentum/weight decay read from the
                         optimizer before its step, ``rec.log({...}, step)``, hardware sampler on
  loop: track            ``with tmon_core.track(optimizer=..., model=..., scheduler=...)``:
                         ``t.batches(loader)`` and ``t.step(loss=loss)`` (defaults: sampler every
                         1 s, log capture, control; ``report="off"``: the report is made once at the
                         end, not per step)
  Lightning: bare        ``Trainer.fit`` of the same model and data, ``logger=False``
  Lightning: TMonCallback  the same fit with ``TMonCallback()`` (same defaults)

Columns: wall µs/step in the steady state (step ``WARMUP`` to the last; median over rounds); the
overhead, the median over rounds of (variant - its own bare run of the same round); the training
thread's CPU overhead the same way; and tmon's own code per step timed inside the run (the hook or
call wrapped with the training thread's CPU clock: ``t.step`` plus the optimizer pre-hook for ``track``, the
``rec.log`` line and the lr read for the hand-written loop, ``TMonCallback``'s batch hooks for
Lightning). Ratios: each tmon overhead against the hand-written ``Recorder.log`` one and against
``TMonCallback``'s.

[2] The per-step calls alone in a tight loop (see ``hot_path``): what the fits' columns measure
with the noise of the whole step around them, here without it.

    .venv/bin/python bench/track_overhead.py [--quick] [--steps N] [--rounds R]
"""

from __future__ import annotations

import gc
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, num, parse_args, table  # noqa: E402

WARMUP = 50  # steps not timed: first calls (allocations, lazy imports, the store's schema)
BATCH = 16
PLAIN = ["loop: bare", "loop: Recorder.log", "loop: track"]
LIGHTNING = ["Lightning: bare", "Lightning: TMonCallback"]


def _timed(fn, box: list):
    """``fn`` adding the training thread's CPU time inside it to ``box[0]`` (CPU time, not wall: on a
    shared machine the wall clock also counts the time the thread waited for a core or the GIL)."""
    clock = time.thread_time

    def wrapper(*args, **kwargs):
        t0 = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            box[0] += clock() - t0

    return wrapper


class Clock:
    """Wall and training-thread CPU clocks at step ``WARMUP`` and at the last step."""

    def __init__(self, last: int):
        self.last = last
        self.t0 = self.t1 = self.c0 = self.c1 = None
        self.own = [0.0]  # seconds in tmon's per-step code (all steps)

    def at(self, step: int) -> None:
        if step == WARMUP:
            self.t0, self.c0 = time.perf_counter(), time.thread_time()
        elif step == self.last:
            self.t1, self.c1 = time.perf_counter(), time.thread_time()

    def result(self, steps: int) -> dict:
        n = self.last - WARMUP
        return {"wall": (self.t1 - self.t0) / n, "cpu": (self.c1 - self.c0) / n, "own": self.own[0] / steps}


def data(steps: int):
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    g = torch.Generator().manual_seed(0)
    x = torch.randn(steps * BATCH, 8, generator=g)
    y = x @ torch.randn(8, generator=g) + 0.1 * torch.randn(steps * BATCH, generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=BATCH, shuffle=True, generator=g)


def plain(variant: str, steps: int, tmp: str, TinyRegressor) -> dict:
    import torch
    import torch.nn.functional as F

    import tmon_core
    from tmon_core import Recorder

    torch.manual_seed(0)
    model = TinyRegressor()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=500, gamma=0.5)
    loader = data(steps)
    clock = Clock(steps - 1)
    store = f"sqlite:///{tmp}/{variant.split()[-1].replace('.', '_')}.db"
    if variant == "loop: bare":
        for step, (x, y) in enumerate(loader):
            clock.at(step)
            opt.zero_grad()
            F.mse_loss(model(x), y).backward()
            opt.step()
            sched.step()
    elif variant == "loop: Recorder.log":
        perf, cpu = time.perf_counter, time.thread_time
        rec = Recorder(store, framework="pytorch")
        rec.start_sampler(1.0)
        own = clock.own
        t_end = perf()
        for step, (x, y) in enumerate(loader):
            clock.at(step)
            t_batch = perf()
            opt.zero_grad()
            loss = F.mse_loss(model(x), y)
            loss.backward()
            c0 = cpu()
            g = opt.param_groups[0]
            lr, momentum, wd = g["lr"], g["momentum"], g["weight_decay"]
            own[0] += cpu() - c0
            opt.step()
            sched.step()
            c0 = cpu()
            now = perf()
            rec.log(
                {
                    "lr": lr,
                    "momentum": momentum,
                    "weight_decay": wd,
                    "loss": loss,
                    "step_time": now - t_batch,
                    "data_time": t_batch - t_end,
                    "epoch": 0,
                },
                step,
            )
            t_end = perf()
            own[0] += cpu() - c0
        rec.close()
    else:
        with tmon_core.track(
            optimizer=opt, model=model, scheduler=sched, store=store, report="off", widget=False
        ) as t:
            for h in t._hooks:  # the same pre-hook, timed
                h.remove()
            t._hooks = [opt.register_step_pre_hook(_timed(t._before_optimizer_step, clock.own))]
            t_step = _timed(t.step, clock.own)
            for step, (x, y) in enumerate(t.batches(loader)):
                clock.at(step)
                opt.zero_grad()
                loss = F.mse_loss(model(x), y)
                loss.backward()
                opt.step()
                sched.step()
                t_step(loss=loss)
    return clock.result(steps)


def lightning(variant: str, steps: int, tmp: str, pl, TinyRegressor) -> dict:
    import torch

    from tmon_callbacks.lightning import TMonCallback

    clock = Clock(steps - 1)

    class StepClock(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            clock.at(trainer.global_step)

    class Data(pl.LightningDataModule):
        def train_dataloader(self):
            return data(steps)

    callbacks = [StepClock()]
    if variant == "Lightning: TMonCallback":
        cb = TMonCallback(f"sqlite:///{tmp}/lightning.db", report="off", widget=False)
        for name in ("on_train_batch_start", "on_train_batch_end"):
            setattr(cb, name, _timed(getattr(cb, name), clock.own))
        callbacks.append(cb)
    torch.manual_seed(0)
    trainer = pl.Trainer(
        max_steps=steps,
        max_epochs=1,
        logger=False,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        default_root_dir=tmp,
        num_sanity_val_steps=0,
        limit_val_batches=0,
        accelerator="cpu",
        log_every_n_steps=1,
    )
    trainer.fit(TinyRegressor(lr=0.05, log_metrics=False), Data())
    return clock.result(steps)


def hot_path(iters: int, rounds: int, tmp: str) -> dict[str, float]:
    """[2] The per-step calls alone, in a tight loop: ``opt.step()`` on parameters without gradients
    (SGD then only walks its param groups, and torch dispatches the step hooks) followed by the
    hand-written recording or by ``t.step(loss=loss)``, minus ``opt.step()`` alone. Rounds alternate;
    the minimum over rounds per call (the least disturbed), in training-thread CPU µs."""
    import torch

    import tmon_core
    from tmon_core import Recorder

    model = torch.nn.Linear(8, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    w = torch.ones((), requires_grad=True)
    loss = w * 2  # a loss with a graph, as a forward pass makes it: each recording detaches it
    perf = time.perf_counter
    rec = Recorder(f"sqlite:///{tmp}/hot_rec.db", framework="pytorch")
    t = tmon_core.track(
        optimizer=opt,
        model=model,
        store=f"sqlite:///{tmp}/hot_track.db",
        report="off",
        widget=False,
        sample_interval=None,
    )
    step = [0]

    def bare():
        opt.step()

    def by_hand():
        t0 = perf()
        g = opt.param_groups[0]
        lr, momentum, wd = g["lr"], g["momentum"], g["weight_decay"]
        opt.step()
        now = perf()
        rec.log(
            {
                "lr": lr,
                "momentum": momentum,
                "weight_decay": wd,
                "loss": loss,
                "step_time": now - t0,
                "data_time": 0.001,
                "epoch": 0,
            },
            step[0],
        )
        step[0] += 1

    def tracked():
        opt.step()
        t.step(loss=loss)

    out: dict[str, list[float]] = {"bare": [], "by_hand": [], "tracked": []}
    fns = {"bare": bare, "by_hand": by_hand, "tracked": tracked}
    for _ in range(rounds):
        for name, fn in fns.items():
            gc.collect()
            c0 = time.thread_time()
            for _ in range(iters):
                fn()
            out[name].append((time.thread_time() - c0) / iters * 1e6)
    t.finish()
    rec.close()
    floor = min(out["bare"])
    return {
        "Recorder.log by hand": min(out["by_hand"]) - floor,
        "t.step + pre-hook": min(out["tracked"]) - floor,
        "opt.step alone": floor,
    }


def main() -> None:
    def extra(p):
        p.add_argument(
            "--steps", type=int, default=None, help="optimizer steps per run (default 2000; quick 300)"
        )
        p.add_argument("--rounds", type=int, default=None, help="rounds of all variants (default 5; quick 2)")
        p.add_argument("--no-lightning", action="store_true", help="only the plain-loop variants")

    args = parse_args(__doc__.splitlines()[0], extra)
    steps = args.steps or (300 if args.quick else 2000)
    rounds = args.rounds or (2 if args.quick else 5)
    header(
        "tmon_core.track overhead per step (plain PyTorch loop vs Recorder.log by hand vs Lightning)",
        args.quick,
    )
    import torch

    torch.set_num_threads(1)
    import lightning.pytorch as pl

    from examples.tiny_lightning import make

    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "tmon"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    TinyRegressor, _ = make("lightning.pytorch")
    names = PLAIN + ([] if args.no_lightning else LIGHTNING)
    results: dict[str, list[dict]] = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            k = r % len(names)
            for name in names[k:] + names[:k]:
                gc.collect()
                sub = os.path.join(tmp, f"r{r}")
                os.makedirs(sub, exist_ok=True)
                if name.startswith("loop"):
                    results[name].append(plain(name, steps, sub, TinyRegressor))
                else:
                    results[name].append(lightning(name, steps, sub, pl, TinyRegressor))
            print(f"round {r + 1}/{rounds} done", flush=True)

    def med(xs):
        return statistics.median(xs) * 1e6

    def over(name, bare, field):
        return med([a[field] - b[field] for a, b in zip(results[name], results[bare])])

    overheads, owns = {}, {}
    rows = []
    for name in names:
        bare = "loop: bare" if name.startswith("loop") else "Lightning: bare"
        is_bare = name == bare
        overheads[name] = None if is_bare else over(name, bare, "wall")
        owns[name] = None if is_bare else med([x["own"] for x in results[name]])
        rows.append(
            [
                name,
                num(med([x["wall"] for x in results[name]]), "{:,.0f}"),
                "-" if is_bare else num(overheads[name], "{:+,.1f}"),
                "-" if is_bare else num(over(name, bare, "cpu"), "{:+,.1f}"),
                "-" if is_bare else num(owns[name], "{:,.1f}"),
                "-" if is_bare else f"{100 * owns[name] / (med([x['wall'] for x in results[bare]])):.1f} %",
            ]
        )
    table(
        [
            "variant",
            "µs/step",
            "+ wall vs its bare",
            "+ thread CPU vs its bare",
            "tmon code µs/step",
            "tmon code / bare step",
        ],
        rows,
        f"{steps} steps, {rounds} rounds (medians over rounds)",
    )

    def ratio(a, b):
        return "n/a" if a is None or b is None or b <= 0 else f"{a / b:.2f}x"

    with tempfile.TemporaryDirectory() as tmp:
        hot = hot_path(2000 if args.quick else 20000, 3 if args.quick else 7, tmp)
    table(
        ["per-step call", "thread CPU µs/step"],
        [[k, num(v, "{:,.2f}")] for k, v in hot.items()],
        "[2] the per-step calls alone, in a tight loop (minimum over rounds; recording = total - opt.step alone)",
    )
    print(f"t.step vs Recorder.log by hand: {hot['t.step + pre-hook'] / hot['Recorder.log by hand']:.2f}x\n")

    peers = [("loop: Recorder.log", "hand-written Recorder.log")]
    if not args.no_lightning:
        peers.append(("Lightning: TMonCallback", "Lightning TMonCallback"))
    table(
        ["tmon_core.track vs", "tmon code ratio", "wall overhead ratio"],
        [
            [label, ratio(owns["loop: track"], owns[p]), ratio(overheads["loop: track"], overheads[p])]
            for p, label in peers
        ],
        "ratios (below 1: track costs less per step)",
    )


if __name__ == "__main__":
    main()
