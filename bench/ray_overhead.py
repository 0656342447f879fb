"""What does TMonCallback add to each step of a Lightning fit inside a Ray Train worker, next to Ray's
own ``RayTrainReportCallback`` alone (issue 20's target)?

One local Ray (two CPUs), ``TorchTrainer`` with one worker (``RayDDPStrategy``,
``RayLightningEnvironment``, ``prepare_trainer``), a tiny linear model fitted for ``--steps`` steps in
one epoch (batch 8, one ``self.log`` per step). Configurations, interleaved in ``--rounds`` rounds:
``ray`` (RayTrainReportCallback) and ``ray+tmon`` (plus TMonCallback: default 1 s sampler, SQLite store
in a temp dir). Per step = the worker's wall time from ``on_train_batch_start`` of step 50 to that of
the last step / the steps in between; overhead = median over rounds of (ray+tmon - ray of the same
round). The worker's start (Ray's, torch's, Lightning's imports) is not in the window.

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
    with ray_env.ray_process_env(tmp):
        ray_env.start(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False))
        for r in range(a.rounds):
            order = ["ray", "ray+tmon"] if r % 2 == 0 else ["ray+tmon", "ray"]
            for name in order:
                out = os.path.join(tmp, f"{name}-{r}.json")
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
    print(
        f"tmon's overhead per step: median {statistics.median(diffs):.1f} us (rounds: {', '.join(f'{d:.1f}' for d in diffs)})"
    )


if __name__ == "__main__":
    main()
