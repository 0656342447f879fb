"""Ray Train workers on two nodes (two raylets of ``ray.cluster_utils.Cluster`` on this machine, one
CPU each, so the two workers land on different nodes): a SQLite store is refused before training
with the message that says what to use; a PostgreSQL store gets one run with both nodes' hardware.
"""

from __future__ import annotations

import os
import socket

import pytest

pytest.importorskip("ray.train")
pytest.importorskip("lightning")
import ray  # noqa: E402
import ray.train  # noqa: E402
from ray.cluster_utils import Cluster  # noqa: E402
from ray.train.torch import TorchTrainer  # noqa: E402

import tmon_core  # noqa: E402
from tests.callbacks import ray_env, ray_jobs  # noqa: E402
from tmon_core import events as ev  # noqa: E402

pytestmark = pytest.mark.slow


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_args() -> dict:
    # ports of its own for each raylet's agents: two raylets on one host must not pick the same
    return {
        "num_cpus": 1,
        "metrics_export_port": _port(),
        "dashboard_agent_listen_port": _port(),
        "runtime_env_agent_port": _port(),
    }


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory):
    with ray_env.ray_process_env(str(tmp_path_factory.mktemp("ray"))):
        cluster = Cluster()

        def start():
            cluster.add_node(include_dashboard=False, **_node_args())
            cluster.add_node(**_node_args())
            cluster.wait_for_nodes()
            ray.init(address=cluster.address, log_to_driver=False)

        try:
            ray_env.start(start, attempts=1)
            assert len([n for n in ray.nodes() if n["Alive"]]) == 2
            yield cluster
        finally:
            ray.shutdown()
            cluster.shutdown()


def fit(tmp_path, name: str, store: str):
    return TorchTrainer(
        ray_jobs.lightning_train,
        train_loop_config={"lr": 0.05, "epochs": 2, "sleep": 0.1},
        scaling_config=ray.train.ScalingConfig(num_workers=2, resources_per_worker={"CPU": 1}),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=str(tmp_path / "ray_results"),
            worker_runtime_env={"env_vars": {"TMON_STORE": store}},
        ),
    ).fit()


def test_a_sqlite_store_is_refused_for_workers_on_two_nodes(two_nodes, tmp_path, store_url):
    with pytest.raises(Exception, match="need a shared store") as caught:
        fit(tmp_path, "split", store_url)
    message = str(caught.value)
    assert "on 2 nodes" in message and "postgresql" in message.lower()
    # refused at setup, on every worker, before a step: nothing was recorded
    assert not os.path.exists(store_url.removeprefix("sqlite:///")) or tmon_core.runs(store=store_url).empty


def test_postgres_store_gets_both_nodes_hardware_in_one_run(two_nodes, tmp_path, pg_url):
    result = fit(tmp_path, "two-nodes", pg_url)
    assert result.error is None
    runs = tmon_core.runs(store=pg_url, group="two-nodes")
    assert len(runs) == 1
    run = tmon_core.open_store(pg_url).run(runs.id[0])
    assert run.status == ev.COMPLETED
    assert run.metrics("loss").step.tolist() == list(range(8))
    assert set(run.samples().node_rank) == {0, 1}  # each node's first worker sampled its node
    assert run.info()["config"]["ray"]["nodes"] == 2
