"""The Prometheus exporter: what it serves, bounded keys, incremental reads, store outages, never
writing; and a real Prometheus (Debian's ``prometheus``) scraping it with the repo's scrape config
and alert rules while a Lightning fit trains into the store, the NaN rule firing and every query
of the Grafana dashboard returning data."""

import hashlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.parse
import urllib.request

import pytest

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry, generate_latest  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402

from tmon_core import Recorder  # noqa: E402
from tmon_core.interop.exporter import Exporter  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(REPO, "deploy")


def scrape(exporter) -> dict:
    """(name, labels as a sorted tuple) -> value, from the bytes a scrape gets (``/metrics``)."""
    out = {}
    for fam in text_string_to_metric_families(exporter.metrics_text().decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sha(path) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def test_serves_live_runs_latest_values_nan_and_info(store_url):
    rec = Recorder(store_url, run_name="live", framework="lightning", flush_interval=0.1, group="sweep-7")
    done = Recorder(store_url, run_name="old", flush_interval=0.1)
    done.log({"loss": 1.0}, 0)
    done.close()
    for s in range(5):
        rec.log({"loss": 1.0 / (s + 1), "lr": 0.1, "step_time": 0.02, "data_time": 0.001, "epoch": 0.0}, s)
    rec.log({"loss": math.nan}, 5)
    rec.flush()
    ex = Exporter(store_url, grace=0.0)  # the ended run is out at once
    ex.poll()
    m = scrape(ex)
    rid = rec.run_id
    assert (
        m[
            (
                "tmon_run_info",
                (
                    ("framework", "lightning"),
                    ("group", "sweep-7"),
                    ("host", socket.gethostname()),
                    ("run_id", rid),
                    ("run_name", "live"),
                    ("status", "running"),
                ),
            )
        ]
        == 1
    )
    assert m[("tmon_run_step", (("run_id", rid),))] == 5
    assert math.isnan(m[("tmon_metric", (("key", "loss"), ("run_id", rid)))])
    assert m[("tmon_run_nonfinite", (("key", "loss"), ("run_id", rid)))] == 1
    assert m[("tmon_metric", (("key", "lr"), ("run_id", rid)))] == 0.1
    assert m[("tmon_step_time_seconds", (("run_id", rid),))] == 0.02
    assert m[("tmon_data_time_seconds", (("run_id", rid),))] == 0.001
    assert m[("tmon_run_epoch", (("run_id", rid),))] == 0.0
    assert abs(m[("tmon_last_step_timestamp_seconds", (("run_id", rid),))] - time.time()) < 60
    assert m[("tmon_alerts_total", (("run_id", rid),))] == 0
    assert m[("tmon_exporter_store_up", ())] == 1 and m[("tmon_exporter_stale", ())] == 0
    assert m[("tmon_exporter_runs", ())] == 1  # "old" ended: out after the grace period
    assert not [k for k in m if dict(k[1]).get("run_id") == done.run_id]
    rec.close()


def _gpu(node, host, gpu, t, **values):
    return dict(wall_time=t, host=host, node_rank=node, gpu=gpu, name="NVIDIA H200", **values)


def test_hardware_of_running_runs_per_node_and_gpu_with_dcgm_labels(store_url):
    """Host figures from a real sample of this machine; GPU rows as the sampler writes them from
    NVML on a 2-node run (CI has no GPU), read back with the labels DCGM's exporter uses."""
    import psutil

    from tmon_core.sampler import HardwareSampler

    rec = Recorder(store_url, run_name="hw", flush_interval=0.1, heartbeat_timeout=600)
    rec.log({"loss": 1.0}, 0)
    # samples of this machine: CPU, RAM, swap, process. The first, taken right after setup, may have no
    # CPU figure (no tick counted yet); the second, after some work, has one
    sampler = HardwareSampler(rec, gpus=False).start()
    end = time.perf_counter() + 0.1
    while time.perf_counter() < end:
        sum(i * i for i in range(1000))
    sampler.sample_once()
    sampler.stop()
    t = time.time()
    rec.sample(
        {"wall_time": t, "host": "node-b", "node_rank": 1, "cpu_percent": 37.0, "ram_used": 5 << 30},
        [
            _gpu(1, "node-b", 0, t, util_percent=93.0, mem_used=70 << 30, mem_total=141 << 30),
            _gpu(
                1, "node-b", 1, t, util_percent=0.0, mem_used=1 << 30, mem_total=141 << 30, power_watts=95.5
            ),
        ],
    )
    rec.flush()
    ex = Exporter(store_url)
    ex.poll()
    m = scrape(ex)
    rid, me = rec.run_id, socket.gethostname()
    node0 = (("Hostname", me), ("node", "0"), ("run_id", rid))
    assert m[("tmon_host_memory_total_bytes", node0)] == psutil.virtual_memory().total
    assert 0 < m[("tmon_host_memory_used_bytes", node0)] < psutil.virtual_memory().total
    assert 0 <= m[("tmon_host_cpu_utilization_ratio", node0)] <= 1
    assert m[("tmon_process_resident_memory_bytes", node0)] > 10 << 20  # this Python, torch imported or not
    assert abs(m[("tmon_hardware_sample_timestamp_seconds", node0)] - t) < 60
    node1 = (("Hostname", "node-b"), ("node", "1"), ("run_id", rid))
    assert m[("tmon_host_cpu_utilization_ratio", node1)] == 0.37
    assert m[("tmon_host_memory_used_bytes", node1)] == 5 << 30
    assert ("tmon_host_memory_total_bytes", node1) not in m  # not in that sample: not made up

    def gpu(i):
        return (
            ("Hostname", "node-b"),
            ("gpu", str(i)),
            ("modelName", "NVIDIA H200"),
            ("node", "1"),
            ("run_id", rid),
        )

    assert m[("tmon_gpu_utilization_ratio", gpu(0))] == 0.93
    assert m[("tmon_gpu_memory_used_bytes", gpu(0))] == 70 << 30
    assert m[("tmon_gpu_memory_total_bytes", gpu(1))] == 141 << 30
    assert m[("tmon_gpu_power_watts", gpu(1))] == 95.5
    assert ("tmon_gpu_power_watts", gpu(0)) not in m
    assert not [k for k in m if k[0].startswith("tmon_gpu_") and dict(k[1])["node"] == "0"]

    # a newer sample replaces the older one; an older one arriving late does not
    t2 = time.time()
    rec.sample(
        None, [_gpu(1, "node-b", 0, t2, util_percent=50.0), _gpu(1, "node-b", 1, t - 30, util_percent=99.0)]
    )
    rec.flush()
    ex.poll()
    m = scrape(ex)
    assert m[("tmon_gpu_utilization_ratio", gpu(0))] == 0.5
    assert m[("tmon_gpu_utilization_ratio", gpu(1))] == 0.0
    assert ("tmon_gpu_memory_used_bytes", gpu(0)) not in m  # the newest sample of GPU 0 had no memory

    # the run ends: its info stays for the grace period, its hardware goes (it is history now)
    rec.close()
    ex.poll()
    m = scrape(ex)
    assert m[("tmon_run_info", next(k[1] for k in m if k[0] == "tmon_run_info"))] == 1
    assert not [k for k in m if k[0].startswith(("tmon_host_", "tmon_gpu_", "tmon_hardware_"))]


def test_no_hardware_leaves_the_machines_to_node_and_dcgm_exporters(store_url):
    rec = Recorder(store_url, run_name="hw", flush_interval=0.1, heartbeat_timeout=600)
    rec.sample(
        {"wall_time": time.time(), "host": "h", "node_rank": 0, "ram_used": 1}, [_gpu(0, "h", 0, time.time())]
    )
    rec.log({"loss": 1.0}, 0)
    rec.flush()
    with pytest.raises(ValueError, match="hardware must be True or False, received hardware='no'"):
        Exporter(store_url, hardware="no")
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tmon_core.interop", "--store", store_url, "exporter", "--no-hardware"]
        + ["--port", str(port), "--addr", "127.0.0.1"],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = []
        _wait(
            lambda: (
                body.append(urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2).read())
                is None
            ),
            60,
            "the exporter",
        )
        assert b'run_name="hw"' in body[0]
        assert b"tmon_host_" not in body[0] and b"tmon_gpu_" not in body[0]
    finally:
        proc.terminate()
        proc.wait(20)
        rec.close()


def test_hardware_reads_are_incremental(store_url, monkeypatch):
    """After the first poll a poll reads only the sample rows written since the previous one."""
    from tmon_core.interop import exporter as exporter_module
    from tmon_core.store import samples_query

    recs = [
        Recorder(store_url, run_name=f"r{i}", flush_interval=0.1, heartbeat_timeout=600) for i in range(3)
    ]
    t0 = time.time() - 3600
    for rec in recs:
        for s in range(2000):  # an hour of 1.8 s samples
            rec.sample({"wall_time": t0 + 1.8 * s, "host": "h", "node_rank": 0, "ram_used": s}, [])
        rec.flush()
    reads = []

    def counting(store, run_ids, cursor=None, **kw):
        got = samples_query.latest_samples(store, run_ids, cursor, **kw)
        reads.append(len(got.host))
        return got

    monkeypatch.setattr(exporter_module, "latest_samples", counting)

    def ram_used(m, rec):
        return m[("tmon_host_memory_used_bytes", (("Hostname", "h"), ("node", "0"), ("run_id", rec.run_id)))]

    ex = Exporter(store_url)
    ex.poll()
    m = scrape(ex)
    assert [ram_used(m, rec) for rec in recs] == [1999] * 3
    ex.poll()
    assert reads[-1] == 0  # nothing new: nothing read
    recs[1].sample({"wall_time": time.time(), "host": "h", "node_rank": 0, "ram_used": 7}, [])
    recs[1].flush()
    ex.poll()
    assert reads[-1] == 1  # the one new row
    m = scrape(ex)
    assert [ram_used(m, rec) for rec in recs] == [1999, 7, 1999]
    for rec in recs:
        rec.close()


def test_the_served_text_is_what_prometheus_client_writes(store_url):
    """metrics_text() renders the families itself (faster): byte for byte generate_latest's output,
    with label values that need escaping, NaN and ±inf, hardware and an empty family."""
    odd = 'a "quoted" name\\with a backslash\nand a newline'
    rec = Recorder(store_url, run_name=odd, group="g\\1", flush_interval=0.1, heartbeat_timeout=600)
    rec.log({"loss": math.nan, "x": math.inf, "y": -math.inf, "z": 1e-300, "w": 12345678.0, 'k"e\\y': 0.5}, 3)
    t = time.time()
    rec.sample(
        {"wall_time": t, "host": odd, "node_rank": 0, "cpu_percent": 12.5},
        [_gpu(0, odd, 0, t, util_percent=1.0)],
    )
    rec.flush()
    ex = Exporter(store_url)
    ex.poll()
    reg = CollectorRegistry(auto_describe=False)
    reg.register(ex)  # prometheus_client's own rendering of the same families
    assert ex.metrics_text() == generate_latest(reg)
    assert ex.metrics_text().count(b"run_name=") == 1
    rec.close()


def test_a_lost_run_is_exported_as_lost_for_the_grace_period(store_url):
    rec = Recorder(store_url, run_name="dies", flush_interval=0.1, heartbeat_timeout=0.3)
    rec.log({"loss": 1.0}, 0)
    rec.flush()
    rec.close(None)  # the process "dies": the run stays running in the store, its heartbeat stops
    time.sleep(0.6)
    ex = Exporter(store_url)
    ex.poll()
    info = [dict(k[1]) for k in scrape(ex) if k[0] == "tmon_run_info"]
    assert [(i["run_id"], i["status"]) for i in info] == [(rec.run_id, "lost")]
    ex = Exporter(store_url, grace=0.1)
    ex.poll()
    assert not [k for k in scrape(ex) if k[0] == "tmon_run_info"]


def test_keys_allow_list_and_cap_bound_the_cardinality(store_url):
    with Recorder(store_url, flush_interval=0.1, heartbeat_timeout=600) as rec:
        rec.log({f"k{i:03d}": float(i) for i in range(200)} | {"loss": 1.0, "val_loss": 2.0}, 0)
        rec.flush()
        ex = Exporter(store_url, max_keys=20)
        ex.poll()
        keys = {dict(k[1])["key"] for k in scrape(ex) if k[0] == "tmon_metric"}
        assert len(keys) == 20
        ex = Exporter(store_url, keys=["loss", "val_*"])
        ex.poll()
        keys = {dict(k[1])["key"] for k in scrape(ex) if k[0] == "tmon_metric"}
        assert keys == {"loss", "val_loss"}


def test_reads_are_incremental_and_steps_per_second(store_url):
    a = Recorder(store_url, run_name="a", flush_interval=0.1)
    b = Recorder(store_url, run_name="b", flush_interval=0.1)
    for r in (a, b):
        r.log({"loss": 1.0}, 0)
        r.flush()
    ex = Exporter(store_url)
    reads = []
    orig = ex._read_run
    ex._read_run = lambda store, rid, *rest: (reads.append(rid), orig(store, rid, *rest))
    ex.poll()
    assert sorted(reads) == sorted([a.run_id, b.run_id])
    reads.clear()
    ex.poll()
    assert reads == []  # nothing moved: nothing read but the run list
    for s in range(1, 11):
        a.log({"loss": 1.0 / s}, s)
    a.flush()
    time.sleep(0.2)
    ex.poll()
    assert reads == [a.run_id]
    m = scrape(ex)
    assert m[("tmon_run_step", (("run_id", a.run_id),))] == 10
    assert m[("tmon_steps_per_second", (("run_id", a.run_id),))] > 0
    a.close()
    b.close()


def test_survives_a_store_outage_serving_stale_values_and_never_writes(tmp_path):
    path = tmp_path / "s.db"
    url = f"sqlite:///{path}"
    with Recorder(url, flush_interval=0.1, heartbeat_timeout=3600) as rec:
        rec.log({"loss": 0.5}, 3)
    # a run left "running" by a process that is still alive elsewhere: written, then the writer gone
    rec2 = Recorder(url, run_name="running", flush_interval=0.1, heartbeat_timeout=3600)
    rec2.log({"loss": 0.25}, 7)
    rec2.flush()
    rec2.close(None)
    before = sha(path)
    ex = Exporter(url)
    ex.poll()
    assert scrape(ex)[("tmon_metric", (("key", "loss"), ("run_id", rec2.run_id)))] == 0.25
    for _ in range(3):
        ex.poll()
    assert sha(path) == before  # polls never write
    ex._store.close()
    saved = path.read_bytes()
    path.write_bytes(b"this is not a database" * 100)
    ex._store = None
    ex.poll()
    m = scrape(ex)
    assert m[("tmon_exporter_store_up", ())] == 0 and m[("tmon_exporter_stale", ())] == 1
    assert (
        m[("tmon_metric", (("key", "loss"), ("run_id", rec2.run_id)))] == 0.25
    )  # the last values, still served
    assert ex.last_error
    path.write_bytes(saved)
    ex.poll()
    m = scrape(ex)
    assert m[("tmon_exporter_store_up", ())] == 1 and m[("tmon_exporter_stale", ())] == 0


def test_promtool_checks_the_alert_rules_and_the_scrape_config():
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian: apt-get install prometheus)")
    out = subprocess.run(
        [promtool, "check", "rules", os.path.join(DEPLOY, "alerts.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr
    out = subprocess.run(
        [promtool, "check", "config", os.path.join(DEPLOY, "prometheus.yml")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    # each rule fed the exporter's series: it fires when it should, with run_name and group
    out = subprocess.run(
        [promtool, "test", "rules", "alerts_test.yml"], cwd=DEPLOY, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0 and "SUCCESS" in out.stdout, out.stdout + out.stderr


def _get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def _wait(pred, timeout, what):
    end = time.time() + timeout
    while time.time() < end:
        try:
            if pred():
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread")
def test_a_real_prometheus_scrapes_a_lightning_fit_through_the_exporter(tmp_path, store_url):
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.skip("the prometheus binary is not installed (Debian: apt-get install prometheus)")
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    # the store exists before the exporter starts (it never creates one)
    Recorder(store_url, run_name="warmup", flush_interval=0.1).close()
    ex_port, prom_port = free_port(), free_port()
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tmon_core.interop",
            "--store",
            store_url,
            "exporter",
            "--port",
            str(ex_port),
            "--addr",
            "127.0.0.1",
            "--interval",
            "0.5",
            "--grace",
            "600",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    # the repo's scrape config and rules, pointed at this exporter and scraped every second
    with open(os.path.join(DEPLOY, "prometheus.yml")) as f:
        cfg = f.read().replace("localhost:9464", f"127.0.0.1:{ex_port}").replace("15s", "1s")
    cfg = cfg.replace("- alerts.yml", f"- {os.path.join(DEPLOY, 'alerts.yml')}")
    (tmp_path / "prometheus.yml").write_text(cfg)
    prom = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{prom_port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    api = f"http://127.0.0.1:{prom_port}/api/v1"
    try:
        _wait(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{ex_port}/metrics", timeout=2).status == 200,
            60,
            "the exporter",
        )
        _wait(
            lambda: urllib.request.urlopen(f"http://127.0.0.1:{prom_port}/-/ready", timeout=2).status == 200,
            60,
            "prometheus",
        )
        _wait(lambda: _get(f"{api}/rules")["data"]["groups"], 60, "the alert rules to load")
        assert len(_get(f"{api}/rules")["data"]["groups"][0]["rules"]) == 7
        _wait(
            lambda: [r["value"][1] for r in _get(f"{api}/query?query=up")["data"]["result"]] == ["1"],
            60,
            "prometheus' first scrape of the exporter",
        )

        # a run on a GPU node of the same group (CI has no GPU): its samples as the sampler writes
        # them from NVML and torch's allocator, so the dashboard's GPU panels have data too
        gpu_run = Recorder(store_url, run_name="gpu-node", group="prom-sweep", flush_interval=0.2)
        now = time.time()
        gpu_run.sample(
            {"wall_time": now, "host": "gpu-host", "node_rank": 0, "cpu_percent": 12.5, "ram_used": 9 << 30},
            [
                _gpu(
                    0,
                    "gpu-host",
                    i,
                    now,
                    mem_used=(60 + i) << 30,
                    mem_total=141 << 30,
                    util_percent=97.0,
                    power_watts=650.0,
                    temperature_c=61.0,
                    torch_allocated=50 << 30,
                    torch_reserved=58 << 30,
                )
                for i in range(2)
            ],
        )
        gpu_run.flush()

        TinyRegressor, SyntheticData = make("lightning.pytorch")
        cb = TMonCallback(
            store_url,
            flush_interval=0.2,
            sample_interval=0.5,  # this machine's host figures, sampled twice a second
            group="prom-sweep",
            run_name="prom-fit",
            report="off",
            widget=False,
        )
        t = Trainer(
            max_epochs=10,
            callbacks=[cb],
            default_root_dir=tmp_path,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            log_every_n_steps=1,
            enable_checkpointing=False,
        )
        fit = threading.Thread(
            target=t.fit,
            args=(TinyRegressor(lr=0.01, sleep=0.1, nan_at_step=70), SyntheticData(n=192, batch_size=16)),
        )
        start = time.time()
        fit.start()
        fit.join(300)
        assert not fit.is_alive()
        time.sleep(3)  # the last poll and scrape
        rid = cb.run_id

        def series(query):
            q = urllib.parse.urlencode({"query": query, "start": start - 5, "end": time.time(), "step": "1"})
            res = _get(f"{api}/query_range?{q}")["data"]["result"]
            return [float(v) for _, v in res[0]["values"]] if res else []

        steps = series(f'tmon_run_step{{run_id="{rid}"}}')
        assert len(set(steps)) >= 3 and steps == sorted(steps) and steps[-1] == 9 * 9 + 8, (
            steps
        )  # 9 steps/epoch
        loss = series(f'tmon_metric{{run_id="{rid}",key="train_loss_step"}}')
        assert len(set(loss)) >= 3, loss
        assert series(f'tmon_run_info{{run_id="{rid}",run_name="prom-fit"}}')
        assert series(f'tmon_steps_per_second{{run_id="{rid}"}}')
        assert series("tmon_exporter_store_up") and series("tmon_exporter_store_up")[-1] == 1
        # the loss went NaN at step 70: the exporter says so and the repo's NaN rule fires
        assert series(f'tmon_run_nonfinite{{run_id="{rid}",key="train_loss_step"}}')
        _wait(
            lambda: any(
                a["labels"]["alertname"] == "TmonNonFiniteMetric" and a["state"] == "firing"
                for a in _get(f"{api}/alerts")["data"]["alerts"]
            ),
            30,
            "the NaN alert to fire",
        )
        nan_alert = next(
            a["labels"]
            for a in _get(f"{api}/alerts")["data"]["alerts"]
            if a["labels"]["alertname"] == "TmonNonFiniteMetric"
        )
        assert (nan_alert["run_name"], nan_alert["group"]) == ("prom-fit", "prom-sweep")  # for routing
        # the fit's own hardware: this machine's memory and CPU while it trained
        ram = series(f'tmon_host_memory_used_bytes{{run_id="{rid}",node="0"}}')
        assert ram and all(0 < v < 1 << 50 for v in ram), ram
        cpu = series(f'tmon_host_cpu_utilization_ratio{{run_id="{rid}"}}')
        assert cpu and all(0 <= v <= 1 for v in cpu), cpu
        assert series(
            f'tmon_gpu_memory_used_bytes{{run_id="{gpu_run.run_id}",gpu="1",modelName="NVIDIA H200"}}'
        )[-1] == float(61 << 30)
        # every query of the Grafana dashboard returns data, with the group variable at "All" (Grafana
        # sends its allValue, .*) and at the run's group; another group filters the runs out
        assert "prom-sweep" in _get(f"{api}/label/group/values?match[]=tmon_run_info")["data"]
        with open(os.path.join(DEPLOY, "grafana", "tmon-dashboard.json")) as f:
            dashboard = json.load(f)
        variable = next(v for v in dashboard["templating"]["list"] if v["name"] == "group")
        assert variable["definition"] == "label_values(tmon_run_info, group)" and variable["allValue"] == ".*"
        exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
        assert len(exprs) == 26 and sum("$group" in e for e in exprs) == 24  # all but the exporter's own
        for expr in exprs:
            for value in (".*", "prom-sweep"):
                assert series(expr.replace("$group", value)), f"no data for the dashboard's query {expr!r}"
            if "$group" in expr:
                assert not series(expr.replace("$group", "another-group")), expr
        gpu_run.close()
    finally:
        for p in (prom, exporter):
            p.terminate()
            try:
                p.wait(20)
            except subprocess.TimeoutExpired:
                p.kill()
