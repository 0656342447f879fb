"""What does TMonCallback add to each step of a Lightning fit inside a Ray Train worker, next to Ray's
own ``RayTrainReportCallback`` alone (issue 20's target)?

One local Ray (two CPUs), ``TorchTrainer`` with one worker (``RayDDPStrategy``,
``RayLightningEnvironment``, ``prepare_trainer``), a tiny linear model fitted for ``--steps`` steps in
one epoch (batch 8, one ``self.log`` per step). Configurations, interleaved in ``--rounds`` rounds:
``ray`` (RayTrainReportCallback) and ``ray+tmon`` (plus TMonCallback: default 1 s sampler, SQLite store
in a temp dir). Per step = the worker's wall time from ``on_train_batch_start`` of step 50 to that of
the last step / the steps in between; overhead = median over rounds of (ray+tmon - ray of the same
round). The worker's start (Ray's, torch's, Lightning's imports) is not in the window.

Also the time from a step to its point in the store (issue 20's "<= 2 x flush interval"): in one more
``ray+tmon`` fit after the rounds (not in the overhead: the poll takes CPU), the driver polls the store
every 20 ms for the run's last step; a step's latency is
the first poll that saw it minus the wall time the worker logged it at (20 ms of poll granularity
included).

    .venv/bin/python bench/ray_overhead.py [--steps N] [--rounds R]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def train(config: dict) -> None:
    import lightning.pytorch as pl
    import torch
    from ray.train.lightning import (
        RayDDPStrategy,
        RayLightningEnvironment,
        RayTrainReportCallback,
        prepare_trainer,
    )

    from tests.callbacks.ray_jobs import Tiny

    torch.set_num_threads(1)

    class Clock(pl.Callback):
        def __init__(self):
            self.t0 = self.t1 = None

        def on_train_batch_start(self, trainer, module, batch, i):
            if i == 50:
                self.t0 = time.perf_counter()
            elif i == config["steps"] - 1:
                self.t1 = time.perf_counter()

    g = torch.Generator().manual_seed(0)
    n = config["steps"] * 8
    ds = torch.utils.data.TensorDataset(torch.randn(n, 4, generator=g), torch.randn(n, 1, generator=g))
    callbacks = [RayTrainReportCallback()]
    if config["tmon"]:
        from tmon_callbacks.lightning import TMonCallback

        callbacks.append(TMonCallback(store=config["store"], widget=False, report="off"))
    clock = Clock()
    trainer = pl.Trainer(
        max_epochs=1,
        strategy=RayDDPStrategy(),
        plugins=[RayLightningEnvironment()],
        accelerator="cpu",
        callbacks=[clock, *callbacks],
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
    )
    prepare_trainer(trainer).fit(Tiny(0.01), torch.utils.data.DataLoader(ds, batch_size=8))
    with open(config["out"], "w") as f:
        json.dump({"us_per_step": (clock.t1 - clock.t0) / (config["steps"] - 51) * 1e6}, f)


class Poller:
    """Polls a store for its running run's last step; ``seen``: [(time, last_step)]."""

    def __init__(self, url: str):
        import threading

        self.url, self.seen, self.stop = url, [], threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        from tmon_core import open_store

        store = None
        while not self.stop.wait(0.02):
            try:
                if store is None:
                    store = open_store(self.url)
                runs = store.runs()
                if len(runs):
                    last = runs.sort_values("created_at").iloc[-1]
                    step = store.run(last.id)._row()["last_step"]
                    if step is not None:
                        self.seen.append((time.time(), int(step)))
            except Exception:
                store = None  # not created yet

    def latencies(self) -> list[float]:
        self.stop.set()
        self.thread.join(5)
        from tmon_core import open_store

        store = open_store(self.url)
        runs = store.runs().sort_values("created_at")
        df = store.run(runs.iloc[-1].id).metrics("loss")
        out, j = [], 0
        for step, wall in zip(df.step.tolist(), df.wall_time.tolist()):
            while j < len(self.seen) and self.seen[j][1] < step:
                j += 1
            if j < len(self.seen):
                out.append(self.seen[j][0] - wall)
        return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--rounds", type=int, default=3)
    a = p.parse_args()
    import ray
    import ray.train
    from ray.train.torch import TorchTrainer

    from tests.callbacks import ray_env

    tmp = tempfile.mkdtemp(prefix="tmon-ray-bench-")
    results: dict = {"ray": [], "ray+tmon": []}
    latency: list[float] = []
    with ray_env.ray_process_env(tmp):
        ray_env.start(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False))
        for r in range(a.rounds + 1):
            order = ["ray", "ray+tmon"] if r % 2 == 0 else ["ray+tmon", "ray"]
            for name in order:
                out = os.path.join(tmp, f"{name}-{r}.json")
                last = r == a.rounds  # the extra latency round
                if last and name == "ray":
                    continue
                poller = Poller(f"sqlite:///{tmp}/tmon-{r}.db") if last else None
                TorchTrainer(
                    train,
                    train_loop_config={
                        "steps": a.steps,
                        "tmon": name == "ray+tmon",
                        "store": f"sqlite:///{tmp}/tmon-{r}.db",
                        "out": out,
                    },
                    scaling_config=ray.train.ScalingConfig(num_workers=1),
                    run_config=ray.train.RunConfig(
                        name=f"bench-{name}-{r}", storage_path=os.path.join(tmp, "results")
                    ),
                ).fit()
                if poller is not None:
                    latency += poller.latencies()
                    continue
                with open(out) as f:
                    results[name].append(json.load(f)["us_per_step"])
        ray.shutdown()
    diffs = [t - b for t, b in zip(results["ray+tmon"], results["ray"])]
    print(f"steps {a.steps}, rounds {a.rounds}")
    for name, v in results.items():
        print(
            f"{name:10s} us/step: "
            + ", ".join(f"{x:.1f}" for x in v)
            + f"  (median {statistics.median(v):.1f})"
        )
    if latency:
        latency.sort()
        q = [latency[min(len(latency) - 1, int(p * len(latency)))] for p in (0.5, 0.95, 0.99)]
        print(
            f"step -> store (flush_interval 1 s): p50 {q[0]:.2f} s, p95 {q[1]:.2f} s, p99 {q[2]:.2f} s, "
            f"max {latency[-1]:.2f} s over {len(latency)} steps (target <= 2 x flush interval = 2 s)"
        )
    print(
        f"tmon's overhead per step: median {statistics.median(diffs):.1f} us (rounds: {', '.join(f'{d:.1f}' for d in diffs)})"
    )


if __name__ == "__main__":
    main()
