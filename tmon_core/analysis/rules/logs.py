"""What the run said: captured log records and warnings, printed lines, and the exception that
ended it, sorted into categories and each tied to the hardware sample nearest its time.

=============  ===========================================================================
category       recognised by (case-insensitive)
=============  ===========================================================================
``oom``        out of memory, ``OutOfMemoryError``, ``CUDA_ERROR_OUT_OF_MEMORY``, "OOM when
               allocating", ``ResourceExhausted``, "Cannot allocate memory", ``MemoryError``
``dataloader`` "DataLoader worker (pid ...)", "exited unexpectedly", "killed by signal",
               "Bus error", shared memory / ``/dev/shm``, "Too many open files"
``nccl``       NCCL, ``ProcessGroupNCCL``, collective operation timeouts, c10d
``cuda``       "CUDA error", ``CUDA_ERROR_*``, cuDNN / cuBLAS status errors, device-side assert,
               illegal memory access
``nonfinite``  NaN / inf, non-finite, "not finite", overflow (e.g. fp16 loss-scale overflows)
``library``    a DeprecationWarning / FutureWarning (or a subclass) raised inside an installed package
               (its file under site-packages or dist-packages): a notice about a library's own future,
               counted and shown apart, never an error nor a reason for the health rating; the user's
               own deprecation warnings stay warnings
``tmon``       tmon's own records (the store could not be written...): monitoring, not training
``error``      any other record at ERROR or above, or an exception no pattern explains
``warning``    any other WARNING
=============  ===========================================================================

Identical messages are folded into one entry with a ``count``.
"""

from __future__ import annotations

import re

import pandas as pd

from ... import events as ev
from ..model import CRITICAL, INFO, WARNING, Finding
from ..terms import Setting
from . import fmt_bytes, recommend

PATTERNS = (
    (
        "oom",
        re.compile(
            r"out of memory|OutOfMemoryError|CUDA_ERROR_OUT_OF_MEMORY|OOM when allocating|"
            r"ResourceExhausted|Cannot allocate memory|\bMemoryError\b",
            re.I,
        ),
    ),
    (
        "dataloader",
        re.compile(
            r"DataLoader worker|worker \(pid|exited unexpectedly|killed by signal|Bus error|"
            r"shared memory|/dev/shm|\bshm\b|Too many open files",
            re.I,
        ),
    ),
    ("nccl", re.compile(r"\bNCCL|ProcessGroupNCCL|collective operation timeout|\bc10d\b", re.I)),
    (
        "cuda",
        re.compile(
            r"CUDA error|CUDA_ERROR_|cuDNN error|CUDNN_STATUS|CUBLAS_STATUS|device-side assert|"
            r"illegal memory access|CUDA kernel errors",
            re.I,
        ),
    ),
    ("nonfinite", re.compile(r"\bnan\b|\b-?inf\b|non-finite|not finite|\boverflow", re.I)),
)
CATEGORY_ORDER = ("oom", "cuda", "nccl", "dataloader", "nonfinite", "error", "tmon", "warning", "library")
LIBRARY = "library"
# what tmon_core.capture stores for a warning: "<Category>: <message> (<filename>:<lineno>)", and
# logging.captureWarnings' "<filename>:<lineno>: <Category>: <message>"
_NOTICE = re.compile(
    r"^\w*(?:DeprecationWarning|FutureWarning): .*\((?P<file>[^()]+):\d+\)\s*$"
    r"|^(?P<file2>\S[^:]*):\d+: \w*(?:DeprecationWarning|FutureWarning): ",
    re.S,
)
_THIRD_PARTY = re.compile(r"[/\\](?:site|dist)-packages[/\\]")


def library_notice(message: str, source: str | None, logger: str | None = None) -> bool:
    """A deprecation or future warning raised inside an installed package (not the user's code)."""
    if source not in ("warnings", "logging") or (source == "logging" and logger != "py.warnings"):
        return False
    m = _NOTICE.match((message or "").strip())
    if not m:
        return False
    return bool(_THIRD_PARTY.search(m.group("file") or m.group("file2") or ""))


MAX_ENTRIES = 200
_LEVELS = {"CRITICAL": 50, "FATAL": 50, "ERROR": 40, "WARNING": 30, "WARN": 30}


def as_step(v) -> int | None:
    try:
        return None if v is None or pd.isna(v) else int(v)
    except (TypeError, ValueError):
        return None


def categorize(
    message: str, level: str = "ERROR", source: str | None = None, logger: str | None = None
) -> str | None:
    """The category of one message (None: an INFO line that matches nothing)."""
    if source == "tmon":
        return "tmon"
    if library_notice(message, source, logger):
        return LIBRARY
    for name, pattern in PATTERNS:
        if pattern.search(message):
            return name
    lvl = _LEVELS.get(str(level).upper(), 0)
    if lvl >= 40 or source == "exception":
        return "error"
    if lvl >= 30:
        return "warning"
    return None


def collect(d) -> list[dict]:
    """The run's log errors: every captured record at WARNING or above, every printed line that
    matches a category, the oom/exception events and the run's own error; oldest first."""
    raw: list[dict] = []
    logs = d.logs
    if not logs.empty:
        for r in logs.itertuples():
            cat = categorize(r.message or "", r.level, r.source, r.logger)
            if cat is None:
                continue
            raw.append(
                {
                    "wall_time": float(r.wall_time),
                    "step": as_step(r.step),
                    "level": r.level,
                    "source": r.source,
                    "logger": r.logger,
                    "category": cat,
                    "message": r.message or "",
                }
            )
    raw = _drop_echoes(raw)
    err = d.failure
    failure_events = d.events_of(ev.EXCEPTION, ev.OOM)
    last_failure = failure_events.iloc[-1] if err is not None and not failure_events.empty else None
    for e in failure_events.itertuples():
        if last_failure is not None and e.Index == last_failure.name:
            continue  # the event of the run's own error: added below with the traceback
        msg = e.message or e.type
        raw.append(
            {
                "wall_time": float(e.wall_time),
                "step": as_step(e.step),
                "level": "ERROR",
                "source": "event",
                "logger": None,
                "category": "oom" if e.type == ev.OOM else categorize(msg, "ERROR", "exception"),
                "message": msg,
            }
        )
    if err is not None:
        msg = f"{err.get('type', 'error')}: {err.get('message', '')}".strip()
        wall = float(last_failure.wall_time) if last_failure is not None else d.info.get("ended_at")
        step = last_failure.step if last_failure is not None else d.last_step
        cat = "oom" if err.get("oom") else categorize(msg, "ERROR", "exception")
        raw.append(
            {
                "wall_time": wall,
                "step": as_step(step),
                "level": "ERROR",
                "source": "exception",
                "logger": None,
                "category": cat,
                "message": msg,
                "traceback": (err.get("traceback") or "")[-4000:] or None,
            }
        )
    raw.sort(key=lambda e: e["wall_time"] or 0)
    folded = _fold(raw)
    if len(folded) > MAX_ENTRIES:
        keep = sorted(folded, key=lambda e: CATEGORY_ORDER.index(e["category"]))[:MAX_ENTRIES]
        kept = {id(e) for e in keep}
        folded = [e for e in folded if id(e) in kept]
    for e in folded:
        e["memory"] = d.memory_at(e["wall_time"])
    return folded


def _drop_echoes(rows: list[dict]) -> list[dict]:
    """A record that a handler also printed (captured as a logging record and as a stderr line)."""
    import bisect

    seen = sorted(
        (r["wall_time"], r["message"].splitlines()[0] if r["message"] else "")
        for r in rows
        if r["source"] not in ("stdout", "stderr")
    )
    times = [t for t, _ in seen]
    out = []
    for r in rows:
        if r["source"] in ("stdout", "stderr"):
            lo = bisect.bisect_left(times, r["wall_time"] - 2)
            hi = bisect.bisect_right(times, r["wall_time"] + 2)
            if any(first and first in r["message"] for _, first in seen[lo:hi]):
                continue
        out.append(r)
    return out


def _fold(rows: list[dict]) -> list[dict]:
    by_key: dict[tuple, dict] = {}
    out = []
    for r in rows:
        key = (r["category"], r["source"], r["message"][:300])
        if key in by_key:
            first = by_key[key]
            first["count"] += 1
            first["last_wall_time"] = r["wall_time"]
            first["last_step"] = r["step"]
            continue
        r["count"] = 1
        by_key[key] = r
        out.append(r)
    return out


# ---------------------------------------------------------------------------- findings
def check(d):
    entries = d.log_entries
    by_cat: dict[str, list[dict]] = {}
    for e in entries:
        by_cat.setdefault(e["category"], []).append(e)
    failed = d.status == ev.FAILED
    yield from _cuda(d, by_cat.get("cuda", []), failed)
    yield from _nccl(d, by_cat.get("nccl", []), failed)
    yield from _dataloader(d, by_cat.get("dataloader", []), failed)
    yield from _nonfinite(d, by_cat.get("nonfinite", []))
    errors = [e for e in by_cat.get("error", []) if e["source"] not in ("exception", "event")]
    if errors:
        n = sum(e["count"] for e in errors)
        yield Finding(
            "logs.errors",
            WARNING,
            f"{n} error record{'s' * (n != 1)} logged during the run",
            "Records at ERROR or above that match no known cause; the first: "
            f"{_first_line(errors[0]['message'])}",
            {"count": n, "first": _brief(errors[:5])},
            step=errors[0]["step"],
            wall_time=errors[0]["wall_time"],
        )


def _first_line(msg: str, n: int = 300) -> str:
    line = (msg or "").strip().splitlines()[0] if (msg or "").strip() else ""
    return line[:n]


def _brief(entries: list[dict]) -> list[dict]:
    return [
        {
            "wall_time": e["wall_time"],
            "step": e["step"],
            "message": _first_line(e["message"]),
            "count": e["count"],
        }
        for e in entries
    ]


def _env(name: str) -> Setting:
    return Setting(f"environment variable {name}=...", None)


def _cuda(d, entries, failed):
    if not entries:
        return
    sev = CRITICAL if failed else WARNING
    first = entries[0]
    assert_hint = any("device-side assert" in e["message"].lower() for e in entries)
    detail = f"A CUDA error was reported: {_first_line(first['message'])}."
    if assert_hint:
        detail += (
            " A device-side assert is most often an index out of range on the GPU (a label >= the number "
            "of classes, a token id >= the vocabulary size)."
        )
    yield Finding(
        "logs.cuda",
        sev,
        "CUDA error",
        detail,
        {"errors": _brief(entries[:5]), "memory": first["memory"]},
        step=first["step"],
        wall_time=first["wall_time"],
    )
    yield recommend(
        "logs.cuda",
        sev,
        "Locate the failing CUDA operation",
        _env("CUDA_LAUNCH_BLOCKING"),
        1,
        "CUDA errors are reported asynchronously, at a later call; with launch blocking the "
        "traceback points at the operation that failed (slower: for debugging only)",
        evidence={"first_error": _first_line(first["message"])},
        priority=10,
    )


def _nccl(d, entries, failed):
    if not entries:
        return
    sev = CRITICAL if failed else WARNING
    first = entries[0]
    timeout = any("timeout" in e["message"].lower() or "timed out" in e["message"].lower() for e in entries)
    yield Finding(
        "logs.nccl",
        sev,
        "NCCL (distributed communication) error" + (" : a collective timed out" if timeout else ""),
        f"{_first_line(first['message'])}",
        {"errors": _brief(entries[:5]), "timeout": timeout},
        step=first["step"],
        wall_time=first["wall_time"],
    )
    setting = d.terms.ddp_timeout()
    if timeout and setting.path:
        current = setting.current if isinstance(setting.current, (int, float)) else 1800
        yield recommend(
            "logs.nccl",
            sev,
            "Give slow collectives more time",
            setting,
            int(current * 2),
            "ranks that wait on a slow one (a long evaluation, checkpoint or data step on one rank) no "
            "longer abort the job; if the timeout still fires, one rank is stuck, not slow",
            evidence={"errors": _brief(entries[:3])},
            current=current,
            priority=10,
        )
    yield recommend(
        "logs.nccl",
        INFO if timeout else sev,
        "See what NCCL is doing",
        _env("NCCL_DEBUG"),
        "INFO",
        "NCCL logs its set-up and the failing operation, naming the rank and the network interface",
        evidence={"errors": _brief(entries[:3])},
        priority=20,
    )


def _dataloader(d, entries, failed):
    if not entries:
        return
    sev = CRITICAL if failed else WARNING
    first = entries[0]
    text = " ".join(e["message"] for e in entries).lower()
    killed = "killed by signal" in text and (
        "killed" in text.split("killed by signal", 1)[1][:40] or "signal 9" in text or "sigkill" in text
    )
    shm = "bus error" in text or "shared memory" in text or "/dev/shm" in text or " shm" in text
    files = "too many open files" in text
    cause = (
        "a worker was killed (SIGKILL: most often the kernel's out-of-memory killer)"
        if killed
        else "shared memory (/dev/shm) ran out"
        if shm
        else "the process ran out of file descriptors"
        if files
        else "a worker exited unexpectedly"
    )
    yield Finding(
        "logs.dataloader",
        sev,
        "A dataloader worker crashed",
        f"{_first_line(first['message'])} ({cause}).",
        {"errors": _brief(entries[:5]), "cause": cause, "memory": first["memory"]},
        step=first["step"],
        wall_time=first["wall_time"],
    )
    workers = d.num_workers
    setting = d.terms.num_workers()
    if (killed or shm) and workers and setting.path:
        mem = first["memory"] or {}
        per = (mem.get("workers_rss_bytes") or 0) / (mem.get("workers") or workers)
        new = workers // 2
        yield recommend(
            "logs.dataloader",
            sev,
            "Fewer dataloader workers",
            setting,
            new,
            f"each worker holds its own copy of what it loads{f' (~{fmt_bytes(per)} RSS each)' if per else ''}"
            "; fewer workers need less RAM and shared memory",
            evidence={"cause": cause},
            priority=10,
        )
    if shm:
        yield recommend(
            "logs.dataloader",
            sev,
            "Give the container more shared memory",
            Setting("docker run --shm-size=...", None),
            "8g",
            "dataloader workers hand batches to the main process through /dev/shm; Docker's default is 64 MB",
            evidence={"cause": cause},
            priority=15,
        )
    if files:
        yield recommend(
            "logs.dataloader",
            sev,
            "Share tensors through files, not descriptors",
            Setting("torch.multiprocessing.set_sharing_strategy(...)", "file_descriptor"),
            "file_system",
            "each tensor a worker sends no longer holds a file descriptor open",
            evidence={"cause": cause},
            priority=15,
        )


def _nonfinite(d, entries):
    if not entries:
        return
    loss = d.loss
    import numpy as np

    if loss is not None and len(loss) and not np.isfinite(loss.values).all():
        return  # the stability rules report the NaN loss itself, with these lines as context
    n = sum(e["count"] for e in entries)
    first = entries[0]
    yield Finding(
        "logs.nonfinite",
        WARNING,
        "NaN/inf or overflow messages in the log",
        f"{n} message{'s' * (n != 1)} about non-finite values or overflow, the first: "
        f"{_first_line(first['message'])}",
        {"count": n, "messages": _brief(entries[:5])},
        step=first["step"],
        wall_time=first["wall_time"],
    )
    if d.fp16:
        setting = d.terms.precision("bf16-mixed")
        value = d.terms.precision_value("bf16-mixed")
        yield recommend(
            "logs.nonfinite",
            WARNING,
            "bf16 instead of fp16",
            setting,
            value,
            "bf16 has fp32's range: no loss-scale overflows or skipped steps (needs an Ampere or newer GPU)",
            evidence={"precision": d.precision, "count": n},
            priority=20,
        )
