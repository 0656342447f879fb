"""What does a guard (``TMonCallback(guard=...)``, ``tmon_core.guard``) cost a fit when nothing fires,
and what does a snapshot cost?

[1] Lightning fits of the tiny MLP (examples/tiny_lightning.py, CPU, one epoch of ``--steps`` steps,
    ``log_every_n_steps=1``) with TMonCallback and guard=None, "skip" and Guard("rollback", every=50)
    (and a bare fit), interleaved in rounds in a rotating order. Per step = wall time from
    ``on_train_batch_start`` of step 50 to that of the last step / the steps in between; the guard's
    cost = the median over rounds of (fit - the guard=None fit of the same round). The check is one
    gradient-norm pass and one device sync per step; rollback adds a snapshot every 50 steps.
[2] The check alone (``_guard_torch.step_is_finite``: total gradient norm + isfinite, read once) on
    models of a few sizes, per call; on the GPU too when there is one (there it includes the sync,
    which waits for the step's queued kernels: in a real step that wait is work the step does anyway).
[3] A snapshot (``TorchSnapshots.save``: model and optimizer state copied to CPU memory, or
    ``torch.save`` to a temp dir when bigger than ``max_memory_bytes``) and a restore, for a few model
    sizes with SGD-momentum and Adam state; per call, with the bytes copied. Snapshots are taken every
    ``every`` steps (50 by default): divide by it for the cost per step.

    .venv/bin/python bench/guard_overhead.py [--quick] [--steps N] [--rounds R] [--sizes 1,10,50]
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import tempfile
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from _util import header, num, parse_args, table  # noqa: E402

WARMUP_STEPS = 50


def _args(p):
    p.add_argument("--steps", type=int, default=None, help="steps per fit (default 1500; quick 300)")
    p.add_argument("--rounds", type=int, default=None, help="rounds of fits (default 5; quick 1)")
    p.add_argument(
        "--sizes",
        default=None,
        help="model sizes for [2] and [3], millions of parameters; 0: the tiny MLP (default 0,1,10,50)",
    )


# ---------------------------------------------------------------------------- [1] fits
def fits(steps: int, rounds: int, tmp: str) -> None:
    import lightning.pytorch as pl

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    from tmon_core import Guard

    for name in ("lightning", "lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    Model, Data = make("lightning.pytorch")

    class Clock(pl.Callback):
        """Wall time and the training thread's CPU time from step 50's batch start to the last's."""

        def __init__(self):
            self.t0 = self.t1 = self.c0 = self.c1 = None
            self.n = 0

        def on_train_batch_start(self, trainer, module, batch, idx):
            if trainer.global_step == WARMUP_STEPS:
                self.t0, self.c0 = time.perf_counter(), time.thread_time()
                self.n = 0
            elif self.t0 is not None:
                self.t1, self.c1 = time.perf_counter(), time.thread_time()
                self.n += 1

    configs = {
        "bare": None,
        "guard=None": None,
        'guard="skip"': "skip",
        'Guard("rollback", every=50)': Guard("rollback", every=50),
    }
    per_step: dict[str, list[float]] = {k: [] for k in configs}
    cpu_step: dict[str, list[float]] = {k: [] for k in configs}
    names = list(configs)
    for r in range(rounds):
        order = names[r % len(names) :] + names[: r % len(names)]
        for name in order:
            clock = Clock()
            cbs = [clock]
            if name != "bare":
                store = f"sqlite:///{tmp}/guard-{r}-{len(per_step[name])}-{abs(hash(name))}.db"
                cbs.insert(0, TMonCallback(store, guard=configs[name], report="off", widget=False))
            trainer = pl.Trainer(
                max_steps=steps,
                max_epochs=1,
                callbacks=cbs,
                logger=False,
                enable_progress_bar=False,
                enable_model_summary=False,
                enable_checkpointing=False,
                log_every_n_steps=1,
                num_sanity_val_steps=0,
                limit_val_batches=0,
            )
            trainer.fit(Model(), Data(n=steps * 16 * 4 // 3 + 64, batch_size=16))
            per_step[name].append((clock.t1 - clock.t0) / max(clock.n, 1) * 1e6)
            cpu_step[name].append((clock.c1 - clock.c0) / max(clock.n, 1) * 1e6)
    for label, data in (("wall", per_step), ("training thread CPU", cpu_step)):
        base = data["guard=None"]
        rows = []
        for name in names:
            us = data[name]
            extra = [a - b for a, b in zip(us, base)]
            rows.append(
                [
                    name,
                    num(statistics.median(us), "{:,.1f}"),
                    "" if name in ("bare", "guard=None") else num(statistics.median(extra), "{:+,.1f}"),
                    "" if name == "bare" else f"{statistics.median(a / b for a, b in zip(us, base)):.3f}",
                    " ".join(f"{x:.0f}" for x in us),
                ]
            )
        table(
            ["config", "us/step (median)", "guard's cost, us/step", "/ guard=None", "rounds"],
            rows,
            title=f"[1] Lightning fits, {steps} steps, {rounds} round(s), tiny MLP on CPU (nothing fires): {label}",
        )


# ---------------------------------------------------------------------------- [2] and [3]
def model_of(millions: float, device: str):
    """A stack of 1024x1024 linear layers of about ``millions`` M parameters; 0: the tiny MLP of [1]."""
    import torch

    if millions == 0:
        torch.manual_seed(0)
        return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1)).to(device)
    width = 1024
    layers = max(1, round(millions * 1e6 / (width * width)))
    torch.manual_seed(0)
    return torch.nn.Sequential(*[torch.nn.Linear(width, width) for _ in range(layers)]).to(device)


def timed(fn, n: int, sync=None) -> float:
    out = []
    for _ in range(n):
        if sync:
            sync()
        t0 = time.perf_counter()
        fn()
        if sync:
            sync()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def check_cost(sizes, devices, quick: bool) -> None:
    import torch

    from tmon_callbacks._guard_torch import step_is_finite

    rows = []
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else None
        for m in sizes:
            model = model_of(m, device)
            x = torch.randn(64, model[0].in_features, device=device)
            model(x).square().mean().backward()
            params = list(model.parameters())
            n = sum(p.numel() for p in params)
            t = timed(lambda params=params: step_is_finite(params), 5 if quick else 20, sync)
            size = f"{n / 1e6:,.1f} M" if n >= 1e5 else f"{n:,} (tiny MLP)"
            rows.append([device, size, num(t * 1e6, "{:,.1f}"), num(n * 4 / t / 1e9, "{:,.2f}")])
            del model, params
    table(
        ["device", "parameters", "check, us", "GB/s of gradients read"],
        rows,
        title="[2] the check alone (total gradient norm + isfinite, one sync), per step",
    )


def snapshot_cost(sizes, devices, quick: bool) -> None:
    import torch

    from tmon_callbacks._guard_torch import TorchSnapshots
    from tmon_core import Guard

    rows = []
    for device in devices:
        sync = torch.cuda.synchronize if device == "cuda" else None
        for m in sizes:
            for opt_name in ("SGD momentum", "Adam"):
                model = model_of(m, device)
                opt = (
                    torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
                    if opt_name == "SGD momentum"
                    else torch.optim.Adam(model.parameters(), lr=1e-3)
                )
                model(torch.randn(8, 1024, device=device)).square().mean().backward()
                opt.step()
                for where, limit in (("memory", 2**40), ("disk", 0)):
                    with tempfile.TemporaryDirectory() as d:
                        snaps = TorchSnapshots(
                            Guard("rollback", max_memory_bytes=limit, snapshot_dir=d, keep=1), model, [opt]
                        )
                        steps = iter(range(10**6))
                        n = 2 if quick else 5
                        save = timed(lambda s=snaps, it=steps: s.save(next(it)), n, sync)
                        last = max(snaps.kept)
                        restore = timed(lambda s=snaps, k=last: s.restore(k), n, sync)
                        rows.append(
                            [
                                device,
                                f"{sum(p.numel() for p in model.parameters()) / 1e6:,.1f} M",
                                opt_name,
                                where,
                                num(snaps.bytes / 2**20, "{:,.0f}"),
                                num(save * 1e3, "{:,.1f}"),
                                num(restore * 1e3, "{:,.1f}"),
                                num(snaps.bytes / save / 2**30, "{:,.2f}"),
                            ]
                        )
                        snaps.close()
                del model, opt
    table(
        ["device", "parameters", "optimizer", "kept in", "MiB", "save, ms", "restore, ms", "save GiB/s"],
        rows,
        title="[3] a snapshot (model + optimizer state) and a restore, per call (every `every` steps)",
    )


def main() -> None:
    args = parse_args(__doc__.split("\n")[0], _args)
    header("guard_overhead: a guard with nothing firing; snapshot copies", args.quick)
    steps = args.steps or (300 if args.quick else 1500)
    rounds = args.rounds or (1 if args.quick else 5)
    sizes = [float(s) for s in (args.sizes or ("0,1,10" if args.quick else "0,1,10,50")).split(",")]
    import torch

    torch.set_num_threads(1)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    with tempfile.TemporaryDirectory() as tmp:
        if os.environ.get("GUARD_BENCH_SKIP_FITS") != "1":
            fits(steps, rounds, tmp)
    check_cost(sizes, devices, args.quick)
    snapshot_cost([s for s in sizes if s > 0], devices, args.quick)


if __name__ == "__main__":
    main()
