"""What does TMonCallback add to each step of a Lightning fit, next to Lightning's own loggers?

A tiny MLP (examples/tiny_lightning.py) is fitted on CPU for ~3000 steps in one epoch, with
``log_every_n_steps=1`` (``--log-every``) and 5 scalars ``self.log``-ged per step. Configurations: bare
(``logger=False``), NullLogger (a Logger that drops everything: what Lightning itself spends once
any logger is attached), TMonCallback (default 1 s hardware sampler, store in a temp dir),
CSVLogger, TensorBoardLogger, MLFlowLogger (local SQLite tracking URI).

[1] The fits run interleaved in rounds, in a rotating order (MLflow only in the first
    ``--slow-rounds``); per step = wall time from ``on_train_batch_start`` of step 50 to
    ``on_train_batch_start`` of the last step (so every timed step includes its logger work) / the
    steps in between. Overhead = median over rounds of (fit - the bare fit of the same round), with
    its quartiles; tmon's overhead as a fraction of each peer's. This is the issue's measure, and
    the one that counts everything a logger costs, cold caches included. A fit's us/step moves by
    +-10 % with the other tenants of this machine, so it takes a dozen rounds to settle.
[2] The same fits, read in ways that other tenants of a shared machine disturb less: the median of
    5 equal blocks of each timed window, and CPU time (training thread; whole process).
[3] Each configuration's per-step logging path alone, inside a live fit: at step 60 a probe runs
    what Lightning does for it every step, a few thousand times in the training thread: dispatch
    the six per-step callback hooks (to TMonCallback for tmon: a callback costs ~1.5 us per hook
    in Lightning's dispatcher even when it does nothing) and ``_logger_connector.log_metrics``
    (tensors -> floats, then each logger's ``log_metrics`` and ``save``); minus the same dispatch
    with no callback (what every fit pays). Added to it, the CPU that the other threads (tmon's
    writer and sampler, TensorBoard's event writer) spent per step in the fits of [1]. Precise,
    but a lower bound: in a hot loop the code's caches stay warm, where in a fit each step runs it
    cold. It favours a logger with much code per step: CSVLogger (fsspec, csv, a file opened and
    closed per step) costs ~50 us here and ~+220 us in [1].
[4] The same path timed inside the fits of [1]: the training thread's CPU in Lightning's
    callback dispatch (every hook of every callback) and its logger path
    (``_LoggerConnector.log_metrics``) during the timed window, minus that of the same round's bare
    fit (median over rounds), plus the other threads' CPU as in [3]. It counts each logger's own
    calls with the caches a fit leaves them (what [3] misses) and leaves out what the noise of
    [1] drowns (the rest of the step).

Targets: tmon's overhead <= 1/5 of TensorBoardLogger's and <= 1/2 of CSVLogger's.

    .venv/bin/python bench/lightning_overhead.py [--quick] [--steps N] [--rounds R] [--slow-rounds S]
                                                 [--configs a,b]
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

from _util import header, median, num, ok, parse_args, table

WARMUP_STEPS = 50
BLOCKS = 5  # the timed window is also cut into this many blocks (of ~590 steps at 3000 steps)
PROBE_AT = 60  # the step at which [3]'s probe runs
LOG_EVERY = 1  # Trainer(log_every_n_steps); --log-every
SCALARS = ("train/loss", "train/mae", "train/max_err", "train/pred_mean", "train/pred_std")

CONFIGS = ["bare", "NullLogger", "TMonCallback", "CSVLogger", "TensorBoardLogger", "MLFlowLogger"]
#: not run by default; pick with --configs to split tmon's overhead into its parts
OPTIONAL = ["TMonCallback-nosampler", "TMonCallback-alerts"]
#: configurations run only in the first ``--slow-rounds`` rounds
SLOW = {"MLFlowLogger"}


def _quiet() -> None:
    """Silence Lightning's, MLflow's and alembic's info output and the usual warnings (after the
    imports: importing lightning and mlflow sets their loggers' levels)."""
    import lightning.pytorch  # noqa: F401

    try:
        import mlflow  # noqa: F401
    except ImportError:
        pass
    for name in (
        "lightning",
        "lightning.pytorch",
        "lightning.fabric",
        "pytorch_lightning",
        "mlflow",
        "alembic",
        "tmon",
    ):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    os.environ.setdefault("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")


def build_classes():
    import lightning.pytorch as pl
    import torch
    from lightning.pytorch.loggers import Logger
    from torch import nn

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from examples.tiny_lightning import make

    TinyRegressor, SyntheticData = make("lightning.pytorch")

    class FiveScalars(TinyRegressor):
        """TinyRegressor whose training step ``self.log``s 5 scalars (on_step only)."""

        def training_step(self, batch, batch_idx):
            x, y = batch
            pred = self(x)
            loss = nn.functional.mse_loss(pred, y)
            with torch.no_grad():
                err = (pred - y).abs()
                self.log("train/loss", loss, on_step=True, on_epoch=False)
                self.log("train/mae", err.mean(), on_step=True, on_epoch=False)
                self.log("train/max_err", err.max(), on_step=True, on_epoch=False)
                self.log("train/pred_mean", pred.mean(), on_step=True, on_epoch=False)
                self.log("train/pred_std", pred.std(), on_step=True, on_epoch=False)
            return loss

    class StepTimer(pl.Callback):
        """Wall clock at the start of every step from ``WARMUP_STEPS`` to the last; process and
        training-thread CPU clocks at both ends."""

        def __init__(self, last_step: int):
            self.last = last_step
            self.walls: list[float] = []
            self.t0 = self.t1 = self.c0 = self.c1 = self.m0 = self.m1 = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            gs = trainer.global_step
            if gs >= WARMUP_STEPS:
                now = time.perf_counter()
                self.walls.append(now)
                if gs == WARMUP_STEPS:
                    self.t0, self.c0, self.m0 = now, time.process_time(), time.thread_time()
                elif gs == self.last:
                    self.t1, self.c1, self.m1 = now, time.process_time(), time.thread_time()

    class NullLogger(Logger):
        """A logger that drops everything: what Lightning itself spends once any logger is attached
        (converting the logged tensors to floats every step), the floor under every logger."""

        name = "null"
        version = 0

        def log_metrics(self, metrics, step=None):
            pass

        def log_hyperparams(self, params, *args, **kwargs):
            pass

    class Probe(pl.Callback):
        """[3]: at step ``PROBE_AT``, run one step's logging path ``iters`` times in a tight loop:
        Lightning's dispatch of the six per-step callback hooks (to tmon's callback for tmon, to no
        callback for the loggers) and its ``_logger_connector.log_metrics``; minus the same six
        dispatches to no callback without ``log_metrics`` (what every fit pays, bare included).
        The two loops alternate in ``ROUNDS`` rounds; medians."""

        ROUNDS = 7

        def __init__(self, iters: int, tmon_cb=None):
            self.iters = iters
            self.tmon_cb = tmon_cb
            self.result: dict | None = None

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step != PROBE_AT or self.result is not None:
                return
            from lightning.pytorch.trainer import call

            lc = trainer._logger_connector
            # what ResultCollection hands the connector each step: 0-d tensors
            metrics = {k: torch.tensor(0.5 + i) for i, k in enumerate(SCALARS)}
            outputs = {"loss": torch.tensor(0.5)}
            loss, opt = outputs["loss"], trainer.optimizers[0]
            hooked = [self.tmon_cb] if self.tmon_cb is not None else []
            n = max(1, self.iters // self.ROUNDS)
            saved = trainer.callbacks

            def steps(callbacks, log: bool):
                trainer.callbacks = callbacks
                hooks = call._call_callback_hooks
                gc.collect()
                w0, m0 = time.perf_counter(), time.thread_time()
                for _ in range(n):
                    hooks(trainer, "on_train_batch_start", batch, batch_idx)
                    hooks(trainer, "on_before_backward", loss)
                    hooks(trainer, "on_after_backward")
                    hooks(trainer, "on_before_optimizer_step", opt)
                    hooks(trainer, "on_before_zero_grad", opt)
                    hooks(trainer, "on_train_batch_end", outputs, batch, batch_idx)
                    if log:
                        lc.log_metrics(metrics)
                w1, m1 = time.perf_counter(), time.thread_time()
                return (w1 - w0) / n * 1e6, (m1 - m0) / n * 1e6

            walls, mains, floors = [], [], []
            try:
                for _ in range(self.ROUNDS):
                    w, m = steps(hooked, True)
                    fw, fm = steps([], False)
                    walls.append(w - fw)
                    mains.append(m - fm)
                    floors.append(fm)
            finally:
                trainer.callbacks = saved
            self.result = {
                "wall": median(walls),
                "main": median(mains),
                "floor": median(floors),
                "iters": n * self.ROUNDS,
            }

    return pl, FiveScalars, SyntheticData, StepTimer, NullLogger, Probe


def _in_window(fn, clock: dict, key: str, timer, now=time.perf_counter):
    """``fn``, unchanged, adding the time it takes (by ``now``) to ``clock[key]`` while ``timer``'s
    timed window is open."""

    def timed(*a, **kw):
        t0 = now()
        try:
            return fn(*a, **kw)
        finally:
            if timer.t0 is not None and timer.t1 is None:
                clock[key] += now() - t0

    return timed


def _instrument(cb, timer) -> dict:
    """Time TMonCallback's per-step entry points in the training thread (measurement only: each
    wrapped method runs unchanged). Only steps inside the timed window count."""
    clock = {"on_train_batch_start": 0.0, "on_train_batch_end": 0.0, "log_metrics": 0.0}
    for obj, name in ((cb, "on_train_batch_start"), (cb, "on_train_batch_end"), (cb._logger, "log_metrics")):
        setattr(obj, name, _in_window(getattr(obj, name), clock, name, timer))
    return clock


def make_config(config: str, tmp: str, tag: str, classes, mlflow_uri: str):
    """(logger for the Trainer, TMonCallback or None, its store path or None)."""
    NullLogger = classes[4]
    if config.startswith("TMonCallback"):
        from tmon_callbacks.lightning import TMonCallback

        store = os.path.join(tmp, f"tmon_{tag}.db")
        kw = {"sample_interval": None} if config.endswith("-nosampler") else {}
        if config.endswith("-alerts"):  # every live rule, on the writer thread (no delivery target)
            kw = {"alerts": True, "notify": []}
        return (
            False,
            TMonCallback(store=store, run_name=f"bench-{tag}", **kw),
            store,
        )  # sampler at 1 s by default
    if config == "bare":
        return False, None, None
    if config == "NullLogger":
        return NullLogger(), None, None
    if config == "CSVLogger":
        from lightning.pytorch.loggers import CSVLogger

        return CSVLogger(save_dir=tmp, name=f"csv_{tag}"), None, None
    if config == "TensorBoardLogger":
        from lightning.pytorch.loggers import TensorBoardLogger

        return TensorBoardLogger(save_dir=tmp, name=f"tb_{tag}"), None, None
    if config == "MLFlowLogger":
        from lightning.pytorch.loggers import MLFlowLogger

        return (
            MLFlowLogger(
                experiment_name="tmon-bench",
                run_name=tag,
                tracking_uri=mlflow_uri,
                save_dir=None,
                artifact_location=os.path.join(tmp, "mlflow-artifacts"),
            ),
            None,
            None,
        )
    raise ValueError(config)


def _fit(classes, steps: int, tmp: str, logger, callbacks: list) -> float:
    pl, FiveScalars, SyntheticData = classes[:3]
    import torch

    torch.manual_seed(0)
    # one epoch of exactly ``steps`` batches of 16 (SyntheticData keeps 75 % for training)
    data = SyntheticData(n=(steps * 16 * 4 + 2) // 3, batch_size=16)
    model = FiveScalars(log_metrics=False)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=1,
        max_steps=steps,
        log_every_n_steps=LOG_EVERY,
        logger=logger,
        callbacks=callbacks,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        default_root_dir=tmp,
    )
    gc.collect()
    t = time.perf_counter()
    trainer.fit(model, datamodule=data)
    if trainer.global_step != steps:
        raise RuntimeError(f"the fit ran {trainer.global_step} steps, not {steps}")
    return time.perf_counter() - t


def _clock_logging_path(timer) -> tuple[dict, callable]:
    """[4]: training-thread CPU inside Lightning's callback dispatch (every hook of every callback)
    and its logger path (``_LoggerConnector.log_metrics``) during the timed window of one fit.
    Returns the clock and what undoes the wrapping."""
    from lightning.pytorch.trainer import call
    from lightning.pytorch.trainer.connectors.logger_connector.logger_connector import _LoggerConnector

    clock = {"dispatch": 0.0, "log_metrics": 0.0}
    hooks, log_metrics = call._call_callback_hooks, _LoggerConnector.log_metrics
    call._call_callback_hooks = _in_window(hooks, clock, "dispatch", timer, time.thread_time)
    _LoggerConnector.log_metrics = _in_window(log_metrics, clock, "log_metrics", timer, time.thread_time)

    def undo():
        call._call_callback_hooks, _LoggerConnector.log_metrics = hooks, log_metrics

    return clock, undo


def one_fit(config: str, steps: int, tmp: str, tag: str, classes, mlflow_uri: str) -> dict:
    StepTimer = classes[3]
    timer = StepTimer(steps - 1)
    logger, cb, store = make_config(config, tmp, tag, classes, mlflow_uri)
    callbacks: list = [timer]
    if cb is not None:
        hook_clock = _instrument(cb, timer)
        callbacks.append(cb)
    path_clock, undo = _clock_logging_path(timer)
    try:
        t_fit = _fit(classes, steps, tmp, logger, callbacks)
    finally:
        undo()
    n = steps - 1 - WARMUP_STEPS
    # noise-robust figure: cut the timed window into BLOCKS equal blocks, keep the median block
    # (a burst of load from another tenant inflates a block or two, not the median)
    w = timer.walls
    size = (len(w) - 1) // BLOCKS
    blocks = [(w[(i + 1) * size] - w[i * size]) / size * 1e6 for i in range(BLOCKS)]
    out = {
        "us_step": (timer.t1 - timer.t0) / n * 1e6,
        "block_us_step": median(blocks),
        "cpu_us_step": (timer.c1 - timer.c0) / n * 1e6,
        "main_us_step": (timer.m1 - timer.m0) / n * 1e6,
        "fit_s": t_fit,
        "path_us_step": (path_clock["dispatch"] + path_clock["log_metrics"]) / n * 1e6,
    }
    if store is not None:
        from tmon_core import Store

        out["tmon_hooks_us_step"] = {k: v / n * 1e6 for k, v in hook_clock.items()}
        with Store(store) as s:
            run = s.latest_run()
            out["tmon_points"] = run.count_points()
            out["tmon_train_loss"] = len(run.metrics("train/loss"))
            out["tmon_samples"] = len(run.samples())
            out["tmon_status"] = run.status
    return out


def isolated(config: str, iters: int, tmp: str, tag: str, classes, mlflow_uri: str) -> dict:
    Probe = classes[5]
    logger, cb, _store = make_config(config, tmp, tag, classes, mlflow_uri)
    probe = Probe(iters, cb)
    _fit(classes, PROBE_AT + 5, tmp, logger, [probe] + ([cb] if cb is not None else []))
    return probe.result


def _tm_over(over: dict, c: str) -> str:
    tm = over.get("TMonCallback")
    if tm is None or c.startswith(("bare", "TMonCallback")):
        return ""
    if over[c] <= 0:
        return "n/a (this <= 0)"
    if tm <= 0:
        return "n/a (tmon <= 0)"
    return f"{tm / over[c]:.2f}"


def _targets(label: str, over: dict) -> None:
    tm = over.get("TMonCallback")
    if tm is None:
        return
    for peer, frac in (("TensorBoardLogger", 1 / 5), ("CSVLogger", 1 / 2)):
        if peer not in over:
            continue
        if over[peer] <= 0:
            verdict = "inconclusive (the peer's overhead is below this measurement's noise)"
        elif tm <= 0:
            verdict = "OK, but inconclusive (tmon's overhead is below this measurement's noise)"
        else:
            verdict = ok(tm <= frac * over[peer])
        print(
            f"target {label}: tmon {tm:+.0f} us/step <= {frac:.2f} x {peer} ({over[peer]:+.0f}) "
            f"= {frac * over[peer]:.0f}: {verdict}"
        )


def main() -> int:
    def extra(p):
        p.add_argument(
            "--steps", type=int, default=None, help="steps per fit (default 3000, 300 with --quick)"
        )
        p.add_argument("--rounds", type=int, default=None, help="rounds (default 12, 1 with --quick)")
        p.add_argument(
            "--slow-rounds",
            type=int,
            default=3,
            help="rounds that include MLFlowLogger (default 3: ~35 s a fit, and its overhead is 40x tmon's)",
        )
        p.add_argument(
            "--configs",
            default=",".join(CONFIGS),
            help="comma-separated subset of " + ",".join(CONFIGS + OPTIONAL),
        )
        p.add_argument(
            "--log-every",
            type=int,
            default=1,
            help="Trainer(log_every_n_steps) of the fits (default 1; Lightning's default is 50: tmon then "
            "reads the self.log values of the steps between from Lightning's result collection)",
        )
        p.add_argument(
            "--iters",
            type=int,
            default=None,
            help="[3] loop iterations per config (default 3000, 300 with --quick; MLflow gets 1/10)",
        )

    args = parse_args(__doc__.split("\n\n")[0], extra)
    header("bench/lightning_overhead.py: per-step cost of logging in a Lightning fit", args.quick)
    _quiet()
    global LOG_EVERY
    LOG_EVERY = args.log_every
    steps = args.steps or (300 if args.quick else 3000)
    rounds = args.rounds or (1 if args.quick else 12)
    iters = args.iters or (300 if args.quick else 3000)
    configs = [c for c in args.configs.split(",") if c]
    if set(configs) - set(CONFIGS + OPTIONAL) or "bare" not in configs:
        print(f"--configs must name 'bare' and only {CONFIGS + OPTIONAL}; received {configs}")
        return 2
    import lightning
    import torch

    classes = build_classes()
    print(
        f"lightning {lightning.__version__} | torch {torch.__version__} ({torch.get_num_threads()} threads) | "
        f"{steps} steps per fit, timed from step {WARMUP_STEPS} | {rounds} round(s), rotating order | "
        f"log_every_n_steps={LOG_EVERY}"
    )
    sys.stdout.flush()

    results: dict[str, list[dict]] = {c: [] for c in configs}
    iso: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="tmon-bench-pl-") as tmp:
        mlflow_uri = "sqlite:///" + os.path.join(tmp, "mlflow.db")
        if "MLFlowLogger" in configs:
            import mlflow

            t0 = time.perf_counter()
            mlflow.MlflowClient(
                tracking_uri=mlflow_uri
            ).search_experiments()  # creates the DB (migrations) once
            print(f"(MLflow tracking DB created in {time.perf_counter() - t0:.1f} s, outside the timings)")
        # one untimed warm-up fit so imports and first-time set-up hit no configuration
        _fit(classes, 120, tmp, False, [])
        for r in range(rounds):
            order = configs[r % len(configs) :] + configs[: r % len(configs)]
            for c in order:
                if c in SLOW and r >= args.slow_rounds:
                    continue
                res = one_fit(c, steps, tmp, f"{c}_{r}", classes, mlflow_uri)
                res["round"] = r
                results[c].append(res)
                print(
                    f"  round {r + 1}/{rounds} {c:<18} {res['us_step']:8.0f} us/step  (CPU: training thread "
                    f"{res['main_us_step']:6.0f}, process {res['cpu_us_step']:6.0f} us/step; "
                    f"fit {res['fit_s']:5.1f} s)"
                )
                sys.stdout.flush()
        for c in configs:
            if c != "bare":
                iso[c] = isolated(
                    c,
                    max(50, iters // 10) if c == "MLFlowLogger" else iters,
                    tmp,
                    f"iso_{c}",
                    classes,
                    mlflow_uri,
                )

    def stat(key):
        return {c: median([x[key] for x in results[c]]) for c in configs}

    med, blk, cpu, main_cpu = (
        stat("us_step"),
        stat("block_us_step"),
        stat("cpu_us_step"),
        stat("main_us_step"),
    )
    bare_of = {x["round"]: x for x in results["bare"]}

    def diffs(c, key):
        return [x[key] - bare_of[x["round"]][key] for x in results[c]]

    def paired(key):
        """Overhead = the median over rounds of (this fit - the bare fit of the same round): fits of
        one round run back to back, so a slow drift of the machine's load cancels out."""
        return {c: median(diffs(c, key)) for c in configs}

    over, bover, cover = paired("us_step"), paired("block_us_step"), paired("cpu_us_step")
    mover = paired("main_us_step")
    rows = []
    for c in configs:
        spread = [x["us_step"] for x in results[c]]
        b = c == "bare"
        q = statistics.quantiles(diffs(c, "us_step"), n=4) if len(results[c]) > 1 and not b else None
        rows.append(
            [
                c,
                len(results[c]),
                num(med[c], "{:,.0f}"),
                f"{min(spread):,.0f}-{max(spread):,.0f}",
                "" if b else num(over[c], "{:+,.0f}"),
                "" if q is None else f"{q[0]:+,.0f}..{q[2]:+,.0f}",
                "" if b else f"{1 + over[c] / med['bare']:.3f}x",
                _tm_over(over, c),
            ]
        )
    table(
        [
            "config",
            "rounds",
            "us/step",
            "min-max over rounds",
            "overhead us/step",
            "quartiles of overhead",
            "vs bare",
            "tmon overhead / this",
        ],
        rows,
        title=f"[1] Lightning fit, tiny MLP on CPU, 5 self.log scalars/step, log_every_n_steps={LOG_EVERY}: {steps} "
        f"steps per fit, timed steps {WARMUP_STEPS}..{steps - 1}; us/step: median over {rounds} round(s) "
        f"of each fit's mean; overhead: median over rounds of (fit - that round's bare fit)",
    )
    rows = []
    for c in configs:
        b = c == "bare"
        rows.append(
            [
                c,
                num(blk[c], "{:,.0f}"),
                "" if b else num(bover[c], "{:+,.0f}"),
                _tm_over(bover, c),
                num(main_cpu[c], "{:,.0f}"),
                "" if b else num(mover[c], "{:+,.0f}"),
                num(cpu[c], "{:,.0f}"),
                "" if b else num(cover[c], "{:+,.0f}"),
                _tm_over(cover, c),
            ]
        )
    table(
        [
            "config",
            "us/step",
            "overhead",
            "tmon / this",
            "thread CPU us/step",
            "thread CPU +",
            "process CPU us/step",
            "process CPU +",
            "tmon / this",
        ],
        rows,
        title=f"[2] the same fits, read in ways other tenants disturb less: wall us/step = median of {BLOCKS} "
        f"equal blocks of each timed window; CPU us/step = training thread (thread_time) and whole process "
        f"(all threads); medians over rounds; '+' = median over rounds of (fit - that round's bare fit)",
    )
    # CPU of every thread but the training thread, per step, in the fits (tmon's writer and sampler,
    # TensorBoard's event writer...): CPU time, so other tenants disturb it little
    bg = {c: median([x["cpu_us_step"] - x["main_us_step"] for x in results[c]]) for c in configs}
    rows = []
    iso_total = {}
    for c in configs:
        if c == "bare":
            continue
        x = iso[c]
        iso_total[c] = x["main"] + bg[c] - bg["bare"]
        rows.append(
            [
                c,
                f"{x['iters']:,}",
                num(x["wall"], "{:,.1f}"),
                num(x["main"], "{:,.1f}"),
                num(bg[c] - bg["bare"], "{:,.1f}"),
                num(iso_total[c], "{:,.1f}"),
                _tm_over(iso_total, c),
            ]
        )
    if rows:
        table(
            [
                "config",
                "iterations",
                "wall us/step",
                "training-thread CPU",
                "other threads CPU (fits)",
                "CPU us/step",
                "tmon / this",
            ],
            rows,
            title=f"[3] one step's logging path alone, in a live fit at step {PROBE_AT}: Lightning's dispatch of "
            f"the 6 per-step callback hooks (to TMonCallback for tmon, to no callback for the loggers) and "
            f"its _logger_connector.log_metrics(5 tensors), in a loop, timed in the training thread, minus "
            f"the same dispatch to no callback (median of {classes[5].ROUNDS} alternating rounds; that floor "
            f"was {median([x['floor'] for x in iso.values()]):.1f} us); plus the CPU the other threads "
            f"(tmon's writer and sampler, TensorBoard's event writer) used per step in the fits of [1] "
            f"(median over rounds, minus bare's). bare = 0",
        )
    # [4]: the logging path timed inside the real fits, paired with each round's bare fit
    pover = paired("path_us_step")
    path_total = {}
    rows = []
    for c in configs:
        if c == "bare":
            continue
        path_total[c] = pover[c] + bg[c] - bg["bare"]
        q = statistics.quantiles(diffs(c, "path_us_step"), n=4) if len(results[c]) > 1 else None
        rows.append(
            [
                c,
                len(results[c]),
                num(pover[c], "{:+,.1f}"),
                "" if q is None else f"{q[0]:+,.1f}..{q[2]:+,.1f}",
                num(bg[c] - bg["bare"], "{:,.1f}"),
                num(path_total[c], "{:,.1f}"),
                _tm_over(path_total, c),
            ]
        )
    if rows:
        table(
            [
                "config",
                "rounds",
                "training-thread CPU in the path, + vs bare",
                "quartiles",
                "other threads CPU",
                "CPU us/step",
                "tmon / this",
            ],
            rows,
            title="[4] the same path timed inside the fits of [1], cold caches and all: training-thread CPU spent in "
            "Lightning's callback dispatch (every hook of every callback) and its logger path "
            "(_LoggerConnector.log_metrics), per timed step, median over rounds of (fit - that round's bare "
            "fit); plus the other threads' CPU as in [3]",
        )
    _targets("[1] wall, mean", over)
    _targets("[2] wall, median block", bover)
    _targets("[2] process CPU", cover)
    _targets("[3] CPU, logging path alone", iso_total)
    _targets("[4] CPU, logging path in the fits", path_total)
    if "TMonCallback" in results:
        hooks: dict[str, list[float]] = {}
        for x in results["TMonCallback"]:
            for k, v in x["tmon_hooks_us_step"].items():
                hooks.setdefault(k, []).append(v)
        parts = ", ".join(f"{k} {median(v):.1f}" for k, v in hooks.items())
        total = sum(median(v) for v in hooks.values())
        print(
            f"TMonCallback's own time in the training thread during the fits (us/step, GIL waits included): "
            f"{parts}; total {total:.1f}"
        )
        last = results["TMonCallback"][-1]
        print(
            f"tmon store check (last fit): status={last['tmon_status']}, points={last['tmon_points']:,}, "
            f"train/loss points={last['tmon_train_loss']:,} (expected {steps:,}), "
            f"hardware samples={last['tmon_samples']}: {ok(last['tmon_train_loss'] == steps)}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
