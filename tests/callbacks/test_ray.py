"""TMonCallback inside Ray Train workers and Ray Tune trials, on a real local Ray (CPU, two cores):
one run per trial, metrics once, every worker's node sampling, the trial's config, a restarted trial
continuing its run, steering a trial, the checkpoints Ray persists, and HF's Trainer under Ray.

What the workers run is ``tests/callbacks/ray_jobs.py``; how Ray is started, ``ray_env.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest

pytest.importorskip("ray.train")
pytest.importorskip("lightning")
import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

import tmon_core  # noqa: E402
from tests.callbacks import ray_env, ray_jobs  # noqa: E402
from tmon_core import events as ev  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def ray_session(tmp_path_factory):
    """One local Ray for the module: two CPUs (the CI machine's), no dashboard."""
    if os.environ.get("RAY_ADDRESS"):  # a running cluster (development)
        ray.init(address=os.environ["RAY_ADDRESS"])
        yield
        ray.shutdown()
        return
    with ray_env.ray_process_env(str(tmp_path_factory.mktemp("ray"))):
        ray_env.start(lambda: ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False))
        yield
        ray.shutdown()


def fit(
    tmp_path,
    name: str,
    store: str,
    func=ray_jobs.lightning_train,
    workers: int = 2,
    failures: int = 0,
    **config,
):
    """A ``TorchTrainer`` run of ``func`` named ``name`` whose workers record into ``store``."""
    config.setdefault("lr", 0.05)
    return TorchTrainer(
        func,
        train_loop_config=config,
        scaling_config=ray.train.ScalingConfig(num_workers=workers),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(tmp_path / "ray_results"),
            failure_config=ray.train.FailureConfig(max_failures=failures),
            worker_runtime_env={"env_vars": {"TMON_STORE": store}},
        ),
    ).fit()


def only_run(store: str, group: str):
    runs = tmon_core.runs(store=store, group=group)
    assert len(runs) == 1, runs
    return tmon_core.open_store(store).run(runs.id[0])


def test_ray_is_not_imported_outside_ray():
    code = (
        "import sys, tmon_core, tmon_callbacks.lightning, tmon_callbacks.hf, tmon_callbacks.ray;"
        "print(sorted(m for m in sys.modules if m == 'ray' or m.startswith('ray.')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True
    )
    assert out.stdout.strip() == "[]"


def test_ray_train_lightning_two_workers_is_one_run(ray_session, tmp_path, store_url):
    result = fit(tmp_path, "two-workers", store_url, epochs=2)
    assert result.error is None
    run = only_run(store_url, "two-workers")  # the group: the Train run's name
    assert run.status == ev.COMPLETED and run.info()["name"] == "two-workers"
    loss = run.metrics("loss")
    # 64 samples, 2 workers, batches of 8: 4 steps an epoch, each written once (rank 0 only)
    assert loss.step.tolist() == list(range(8))
    assert run.metrics("train_loss").step.tolist() == list(range(8))
    samples = run.samples()
    assert len(samples) > 0 and set(samples.node_rank) == {0}  # one node: its first worker samples it
    config = run.info()["config"]
    assert config["hparams"]["lr"] == 0.05 and config["hparams"]["epochs"] == 2  # train_loop_config
    assert config["ray"]["world_size"] == 2 and config["ray"]["nodes"] == 1
    # RayTrainReportCallback's checkpoints, at their persistent path (not the worker's temp dir)
    ckpts = run.checkpoints()
    storage = str(tmp_path / "ray_results" / "two-workers")
    assert ckpts.step.tolist() == [4, 8] and set(ckpts.source) == {"ray"}
    assert all(
        p.startswith(storage) and p.endswith("checkpoint.ckpt") and os.path.isfile(p) for p in ckpts.path
    )
    assert result.checkpoint.path == os.path.dirname(ckpts.path.iloc[-1])


def test_ray_tune_trials_are_runs_of_one_group(ray_session, tmp_path, store_url):
    from ray import tune

    tuner = tune.Tuner(
        ray_jobs.tune_driver,
        param_space={
            "train_loop_config": {"lr": tune.grid_search([0.003, 0.01, 0.03, 0.1]), "epochs": 1},
            "store": store_url,
            "storage_path": str(tmp_path / "trials"),
        },
        tune_config=tune.TuneConfig(max_concurrent_trials=1),
        run_config=tune.RunConfig(name="sweep-lr", storage_path=str(tmp_path / "tune")),
    )
    results = tuner.fit()
    assert not results.errors
    runs = tmon_core.runs(store=store_url, group="sweep-lr")
    assert len(runs) == 4 and set(runs.status) == {ev.COMPLETED}
    store = tmon_core.open_store(store_url)
    by_lr = {store.run(i).info()["config"]["hparams"]["lr"]: store.run(i) for i in runs.id}
    assert set(by_lr) == {0.003, 0.01, 0.03, 0.1}
    trial_dirs = {os.path.basename(r.path) for r in results}
    for lr, run in by_lr.items():
        info = run.info()
        assert info["name"].startswith("tune_driver_") and info["name"] == info["config"]["ray"]["trial_name"]
        assert any(d.startswith(info["name"]) for d in trial_dirs)  # named after its trial
        assert run.metrics("lr").value.tolist() == [lr] * 8
    # the sweep's report: every trial, the best by the loss, lr the setting that varied
    report = tmon_core.group_report("sweep-lr", store=store_url)
    trials = report.trials
    assert sorted(trials["hparams.lr"] if "hparams.lr" in trials else trials["lr"]) == [
        0.003,
        0.01,
        0.03,
        0.1,
    ]
    assert report.metric == "loss" and report.best is not None and report.best["run"] in set(runs.id)
    assert trials.run.iloc[0] == report.best["run"]


def test_restarted_trial_continues_its_run(ray_session, tmp_path, store_url):
    marker = str(tmp_path / "failed-once")
    result = fit(
        tmp_path, "restart", store_url, workers=1, failures=1, epochs=2, fail_marker=marker, fail_at_step=11
    )
    assert result.error is None and os.path.exists(marker)
    run = only_run(store_url, "restart")  # the same run id for both attempts
    assert run.status == ev.COMPLETED
    events = run.events()
    resumed = events[events.type == ev.RESUMED]
    assert len(resumed) == 1
    data = resumed.data.iloc[0]
    # attempt 1 recorded steps 0-10 and failed at step 11; attempt 2 restarts from Ray's checkpoint of
    # step 8, and its steps 8-15 are recorded as 11-18: none lost, none twice
    assert data["previous_status"] == ev.FAILED and data["previous_last_step"] == 10
    assert data["framework_step"] == 8 and data["step_offset"] == 3
    assert resumed.step.iloc[0] == 11
    assert run.metrics("loss").step.tolist() == list(range(19))
    assert ev.EXCEPTION in set(events.type) and events[events.type == ev.TRAIN_END].shape[0] == 2
    assert run.checkpoints().step.tolist() == [8, 19]  # the restored one is not recorded twice


def test_a_killed_worker_resumes_the_same_run(ray_session, tmp_path, store_url):
    marker = str(tmp_path / "killed-once")
    # half a second a step: the killed attempt's recorder flushes (every second) after Ray's checkpoint
    # of step 8 and before the kill at step 11 (3 s after step 10 ends, once Ray has registered the
    # checkpoint); what it had not flushed dies with it
    result = fit(
        tmp_path, "killed", store_url, workers=1, failures=1, epochs=2, sleep=0.5,
        fail_marker=marker, fail_at_step=11, kill=True,
    )  # fmt: skip
    assert result.error is None and os.path.exists(marker)
    run = only_run(store_url, "killed")
    assert run.status == ev.COMPLETED
    events = run.events()
    resumed = events[events.type == ev.RESUMED]
    assert len(resumed) == 1
    data = resumed.data.iloc[0]
    assert data["previous_status"] in (ev.RUNNING, ev.LOST)  # nobody ended it: the process was killed
    assert 8 <= data["previous_last_step"] <= 10 and data["framework_step"] == 8
    assert data["step_offset"] == data["previous_last_step"] + 1 - 8
    # every step once, none missing: the restarted attempt's steps 8-15 follow the last one recorded
    assert run.metrics("loss").step.tolist() == list(range(16 + data["step_offset"]))
    assert len({os.path.dirname(p) for p in run.checkpoints().path}) == 2  # Ray's two checkpoints


def test_a_trial_is_steered_and_stopped_through_the_store(ray_session, tmp_path, store_url):
    outcome: dict = {}

    def steer():
        deadline = time.time() + 400
        try:
            while time.time() < deadline:
                runs = tmon_core.runs(store=store_url, group="steered")
                if len(runs) and (runs.last_step[0] or 0) >= 3:
                    break
                time.sleep(0.5)
            run = tmon_core.open_store(store_url).run(runs.id[0])
            req = run.set_param("lr", 0.5, mode="set")
            outcome["set"] = req.wait(timeout=120)
            outcome["stop"] = run.stop().wait(timeout=120)
        except Exception as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=steer, daemon=True)
    thread.start()
    result = fit(tmp_path, "steered", store_url, epochs=100, sleep=0.05, control="admin")
    thread.join(60)
    assert result.error is None  # Ray saw a clean finish
    assert "error" not in outcome and outcome["set"] == "applied" and outcome["stop"] == "applied", outcome
    run = only_run(store_url, "steered")
    assert run.status == ev.COMPLETED
    events = run.events()
    assert ev.STOPPED in set(events.type)
    assert events[events.type == ev.TRAIN_END].data.iloc[0]["reason"] == ev.END_STOP_REQUEST
    lr = run.metrics("lr")
    assert lr.value.iloc[0] == 0.05 and lr.value.iloc[-1] == 0.5
    assert run.info()["last_step"] < 100 * 4 - 1


def test_hf_trainer_under_torch_trainer(ray_session, tmp_path, store_url):
    pytest.importorskip("transformers")
    result = fit(tmp_path, "hf-run", store_url, func=ray_jobs.hf_train, max_steps=6, save_steps=3, lr=1e-3)
    assert result.error is None
    run = only_run(store_url, "hf-run")
    info = run.info()
    assert run.status == ev.COMPLETED and info["framework"] == "hf"
    assert run.metrics("lr").step.tolist() == [1, 2, 3, 4, 5, 6]  # HF's global_step, once each
    assert run.metrics("loss").step.tolist() == [1, 2, 3, 4, 5, 6]
    assert info["config"]["hparams"]["max_steps"] == 6 and info["config"]["ray"]["world_size"] == 2
    assert len(run.samples()) > 0
    ray_ckpts = run.checkpoints().query("source == 'ray'")
    storage = str(tmp_path / "ray_results" / "hf-run")
    assert ray_ckpts.step.tolist() == [3, 6]
    assert all(
        p.startswith(storage) and os.path.isfile(os.path.join(p, "model.safetensors")) for p in ray_ckpts.path
    )
