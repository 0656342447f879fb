"""The hardware sampler on this machine (no GPU in CI): what it records and how it degrades."""

import multiprocessing as mp
import time

import pytest

from tmon_core import HardwareSampler, Recorder, open_store
from tmon_core.sampler import GpuCollector, HostCollector, ProcessCollector


def _sleep(seconds):
    time.sleep(seconds)


def test_sampler_records_host_and_process_figures_without_nvml(store_url):
    rec = Recorder(store_url, flush_interval=0.05)
    sampler = rec.start_sampler(0.1)
    time.sleep(0.55)
    rec.close()
    samples = open_store(store_url).run(rec.run_id).samples()
    assert len(samples) >= 3
    last = samples.iloc[-1]
    assert last.ram_total > last.ram_used > 0 and last.ram_available > 0
    assert last.proc_rss > 10_000_000 and last.swap_used >= 0 and 0 <= last.cpu_percent <= 100
    if "gpu" in sampler.unavailable:  # this machine has no NVIDIA driver: said once, as an event
        events = open_store(store_url).run(rec.run_id).events("sampler")
        assert len(events) == 1 and "gpu" in events.message[0]


def test_gpu_collector_says_why_it_cannot_work_here():
    reason = GpuCollector().setup()
    if reason is None:
        pytest.skip("this machine has a working NVML: see the gpu-marked tests")
    assert "NVML" in reason or "nvidia-ml-py" in reason


def test_children_are_counted_with_their_memory():
    ctx = mp.get_context("fork")
    workers = [ctx.Process(target=_sleep, args=(5,)) for _ in range(3)]
    for w in workers:
        w.start()
    try:
        time.sleep(0.2)
        collector = ProcessCollector(full_scan_every=1000)  # the fast /proc path alone must find them
        got = collector.collect()
        assert got["children_count"] >= 3
        assert got["children_rss"] > 3 * 1_000_000
    finally:
        for w in workers:
            w.terminate()
            w.join()
    assert ProcessCollector().collect()["children_count"] == 0


def test_host_figures_read_from_proc_agree_with_psutil():
    import psutil

    host = HostCollector()
    host.setup()
    if not host._proc:
        pytest.skip("no Linux /proc here: the collector uses psutil itself")
    busy = [sum(i * i for i in range(200_000)) for _ in range(3)]  # some CPU between the two reads
    psutil.cpu_percent(None)
    assert busy
    ours, vm, swap = host.collect(), psutil.virtual_memory(), psutil.swap_memory()
    assert ours["ram_total"] == vm.total and abs(ours["ram_available"] - vm.available) < 64 * 2**20
    assert ours["ram_used"] == ours["ram_total"] - ours["ram_available"]
    assert abs(ours["swap_used"] - swap.used) < 64 * 2**20 and 0 < ours["cpu_percent"] <= 100
    host._proc = False  # the psutil path (other systems, a hidden /proc) records the same fields
    assert set(host.collect()) == set(ours)


def test_no_cpu_tick_between_two_reads_gives_no_cpu_figure_not_zero(monkeypatch):
    """The first sample comes right after setup: with no tick counted between the two reads the CPU
    share is unknown, and a 0 % there drew every run's CPU line starting from 0."""
    from tmon_core.sampler import host as host_mod

    host = HostCollector()
    host.setup()
    if not host._proc:
        pytest.skip("no Linux /proc here: the collector uses psutil itself")
    still = host_mod._proc_cpu_times()
    monkeypatch.setattr(host_mod, "_proc_cpu_times", lambda: still)
    host._last_cpu = still
    got = host.collect()
    assert "cpu_percent" not in got and got["ram_total"] > 0


class Broken(HostCollector):
    name = "broken"

    def collect(self):
        raise OSError("/proc/meminfo hidden by the container")


def test_a_failing_collector_never_stops_the_others(store_url):
    rec = Recorder(store_url, flush_interval=0.05)
    sampler = HardwareSampler(rec, 0.1, collectors=[Broken(), ProcessCollector()]).start()
    time.sleep(0.35)
    sampler.stop()
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    samples = run.samples()
    assert len(samples) >= 2 and samples.proc_rss.notna().all() and samples.ram_total.isna().all()
    assert run.events("sampler").message.str.contains("broken collector failed").sum() == 1


def test_sample_interval_must_be_at_least_a_tenth_of_a_second(store_url):
    rec = Recorder(store_url)
    try:
        with pytest.raises(
            ValueError, match="sample_interval must be >= 0.1 seconds, received sample_interval=0"
        ):
            HardwareSampler(rec, 0)
    finally:
        rec.close()


@pytest.mark.gpu
def test_nvml_gpu_figures_and_torch_allocator(store_url):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA GPU on this machine")
    x = torch.empty(256 * 1024 * 1024, dtype=torch.uint8, device="cuda")
    rec = Recorder(store_url, flush_interval=0.05)
    sampler = rec.start_sampler(0.1)
    assert "gpu" not in sampler.unavailable, sampler.unavailable
    time.sleep(0.35)
    rec.close()
    g = open_store(store_url).run(rec.run_id).gpu_samples()
    assert len(g) >= 2 and (g.mem_total > g.mem_used).all() and (g.mem_used > 256 * 1024 * 1024).all()
    assert (g.torch_allocated >= 256 * 1024 * 1024).all()
    del x


def test_children_forked_by_another_thread_are_seen_at_every_sample():
    """fit_in_background trains in a thread: its dataloader workers are that thread's children."""
    import threading

    ctx = mp.get_context("fork")
    workers, ready, done = [], threading.Event(), threading.Event()

    def trainer_thread():
        workers.extend(ctx.Process(target=_sleep, args=(5,)) for _ in range(3))
        for w in workers:
            w.start()
        ready.set()
        done.wait(10)  # the thread stays alive, as a training thread does

    t = threading.Thread(target=trainer_thread)
    t.start()
    ready.wait(5)
    try:
        collector = ProcessCollector(full_scan_every=30)
        counts = [collector.collect()["children_count"] for _ in range(10)]
        assert counts == [3] * 10
    finally:
        for w in workers:
            w.terminate()
            w.join()
        done.set()
        t.join()
