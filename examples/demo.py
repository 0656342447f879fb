"""The demo: train a tiny Lightning model on synthetic data with TMonCallback on the embedded
SQLite default (./tmon.db), then print what was recorded and the run's report, as a user would
look at them.

    python examples/demo.py [--epochs 5] [--store sqlite:///tmon.db]
"""

from __future__ import annotations

import argparse
import os
import sys
import warnings

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--store", default=None, help="database URL (default $TMON_STORE or sqlite:///tmon.db)")
    ap.add_argument("--out", default="demo_out", help="where Lightning writes checkpoints")
    args = ap.parse_args()

    warnings.filterwarnings("ignore", module="lightning")
    from lightning.pytorch import Trainer, seed_everything
    from lightning.pytorch.callbacks import ModelCheckpoint

    import tmon_core
    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback
    from tmon_core import cli

    seed_everything(0, verbose=False)
    TinyRegressor, SyntheticData = make("lightning.pytorch")
    callback = TMonCallback(args.store, run_name="demo")
    trainer = Trainer(
        max_epochs=args.epochs,
        callbacks=[
            callback,
            ModelCheckpoint(dirpath=os.path.join(args.out, "checkpoints"), monitor="val_loss", save_top_k=2),
        ],
        log_every_n_steps=1,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        default_root_dir=args.out,
    )
    trainer.fit(TinyRegressor(two_groups=True, scheduler="step"), SyntheticData(n=1024, batch_size=32))

    run = tmon_core.open_store(args.store).run(callback.run_id)
    print(f"\n=== recorded in {run.store}: run {run.id} ===\n")
    cli.main((["--store", args.store] if args.store else []) + ["show", run.id])
    print("\ntrain_loss (every 16th step):")
    print(run.metrics("train_loss_step").iloc[::16].to_string(index=False))
    print("\nevents:")
    print(run.events()[["step", "type", "message"]].astype(object).fillna("").to_string(index=False))
    print("\n=== the report: what went well, what went wrong, what to change ===\n")
    print(tmon_core.report(run.id, store=args.store))
    print(
        "\nthe same from a terminal:  tmon runs  |  tmon show latest  |  tmon report latest  |  "
        "tmon export latest --format csv"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
