"""What every framework adapter shares: option checks, the run's lifecycle, never crashing training.

An adapter decides *when* (its framework's hooks); this module and ``tmon_core`` decide *what*
is recorded and how. Nothing here imports a framework.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass

from tmon_core import Recorder, events as ev
from tmon_core.recorder import describe_exception, is_oom

log = logging.getLogger("tmon")


class TMonCallbackWarning(RuntimeWarning):
    """A tmon callback hook failed; training goes on without that piece of monitoring."""


@dataclass
class CallbackOptions:
    store: str | os.PathLike | None = None
    run_name: str | None = None
    flush_interval: float = 0.5
    sample_interval: float | None = 1.0  # None: no hardware sampling
    heartbeat_timeout: float = 30.0
    log_grad_norm: bool = False
    gpus: bool = True

    def __post_init__(self) -> None:
        if self.sample_interval is not None and (
            not isinstance(self.sample_interval, (int, float)) or self.sample_interval < 0.1
        ):
            raise ValueError(
                f"sample_interval must be >= 0.1 seconds or None, received sample_interval={self.sample_interval!r}"
            )
        if not isinstance(self.flush_interval, (int, float)) or not 0.05 <= self.flush_interval <= 60:
            raise ValueError(
                f"flush_interval must be between 0.05 and 60 seconds, received flush_interval={self.flush_interval!r}"
            )
        if not isinstance(self.heartbeat_timeout, (int, float)) or self.heartbeat_timeout <= self.flush_interval:
            raise ValueError(
                f"heartbeat_timeout must be seconds above flush_interval={self.flush_interval}, "
                f"received heartbeat_timeout={self.heartbeat_timeout!r}"
            )
        if self.run_name is not None and not isinstance(self.run_name, str):
            raise ValueError(f"run_name must be a string, received run_name={self.run_name!r}")
        if not isinstance(self.log_grad_norm, bool):
            raise ValueError(f"log_grad_norm must be True or False, received log_grad_norm={self.log_grad_norm!r}")
        if self.store is not None:
            from tmon_core.store import resolve_url

            resolve_url(self.store)  # a malformed URL fails here, at construction, not mid-fit


class RunSession:
    """One fit's run, as seen from one process.

    ``writes_metrics`` on the process that records metrics and events (global rank 0);
    ``samples`` on each node's local rank 0, which samples its own node's hardware.
    """

    def __init__(self, opts: CallbackOptions, framework: str, *, global_rank: int = 0, local_rank: int = 0,
                 node_rank: int = 0, run_id: str | None = None, config: dict | None = None):
        self.opts = opts
        self.writes_metrics = global_rank == 0
        self.recorder: Recorder | None = None
        if self.writes_metrics or local_rank == 0:
            self.recorder = Recorder(
                opts.store, run_name=opts.run_name, run_id=None if self.writes_metrics else run_id,
                framework=framework, config=config, flush_interval=opts.flush_interval,
                heartbeat_timeout=opts.heartbeat_timeout,
            )
            if local_rank == 0 and opts.sample_interval is not None:
                self.recorder.start_sampler(opts.sample_interval, node_rank=node_rank, gpus=opts.gpus)
        self.run_id = self.recorder.run_id if self.recorder else run_id
        self.ended = False

    def event(self, type: str, /, **kw) -> None:
        if self.writes_metrics and self.recorder is not None:
            self.recorder.event(type, **kw)

    def fail(self, exc: BaseException, step: int | None) -> None:
        """End the run because ``exc`` escaped the framework's training loop."""
        if self.ended or self.recorder is None:
            return
        info = None
        status = ev.INTERRUPTED if isinstance(exc, KeyboardInterrupt) else ev.FAILED
        try:
            info = describe_exception(exc)
            if status == ev.INTERRUPTED:
                self.event(ev.INTERRUPT, step=step, message="KeyboardInterrupt")
            else:
                kind = ev.OOM if is_oom(exc) else ev.EXCEPTION
                self.event(kind, step=step, message=f"{info['type']}: {info['message'][:500]}", data=info)
        finally:  # whatever happened above, the run ends with the right status
            self.end(status, info)

    def end(self, status: str = ev.COMPLETED, error: dict | None = None) -> None:
        if self.ended:
            return
        self.ended = True
        if self.recorder is not None:
            # a rank that only samples must leave the run's status to rank 0
            self.recorder.close(status if self.writes_metrics else None, error)


def warn_once(obj, name: str, exc: BaseException) -> None:
    """Warn, once per ``name`` and object, that a piece of monitoring failed."""
    failed = obj.__dict__.setdefault("_tmon_failed_hooks", set())
    if name not in failed:
        failed.add(name)
        msg = f"tmon: {type(obj).__name__}.{name} failed ({type(exc).__name__}: {exc}); training continues"
        log.warning(msg, exc_info=exc)
        warnings.warn(msg, TMonCallbackWarning, stacklevel=3)


def guarded(fn):
    """Run a hook; if tmon fails inside it, warn once per hook and let training go on."""

    @functools.wraps(fn)
    def wrapper(self, *args, **kwargs):
        try:
            return fn(self, *args, **kwargs)
        except Exception as exc:
            warn_once(self, fn.__name__, exc)
            return None

    return wrapper
