"""One fit's run as the process running it sees it: opened, recorded into, ended, evaluated after.

``RunSession`` is what every framework adapter goes through (``tmon_callbacks``): it opens the
run (the ``Recorder``) on the processes that record, the hardware sampler on each node's first
process, the controller, log capture and the notebook widget; it ends the run with the status
and error its fit ended with, then makes the report; and it records an evaluation after the fit
into the ended run. Nothing here imports a framework.

A piece of monitoring that fails here (the widget, log capture, the report) never stops the fit:
it is one ``TMonCallbackWarning`` per piece and session (:func:`warn_once`).
"""

from __future__ import annotations

import atexit
import logging
import warnings
import weakref

from . import events as ev
from .errors import describe_exception, is_oom
from .recorder import Recorder

log = logging.getLogger("tmon")


class TMonCallbackWarning(RuntimeWarning):
    """A tmon callback hook failed; training goes on without that piece of monitoring."""


def warn_once(obj, name: str, exc: BaseException) -> None:
    """Warn, once per ``name`` and object, that a piece of monitoring failed."""
    failed = obj.__dict__.setdefault("_tmon_failed_hooks", set())
    if name not in failed:
        failed.add(name)
        msg = f"tmon: {type(obj).__name__}.{name} failed ({type(exc).__name__}: {exc}); training continues"
        log.warning(msg, exc_info=exc)
        # stacklevel 3: the caller of the failed method (for a guarded hook, the framework's line)
        warnings.warn(msg, TMonCallbackWarning, stacklevel=3)


class RunSession:
    """One fit's run, as seen from one process.

    ``opts`` are the adapter's options (``tmon_callbacks._options.CallbackOptions``: store,
    run_name, intervals, tags, notes, capture, report, widget, and ``make_controller``).

    ``writes_metrics`` on the process that records metrics and events (global rank 0);
    ``samples`` on each node's local rank 0, which samples its own node's hardware.
    """

    def __init__(
        self,
        opts,
        framework: str,
        *,
        global_rank: int = 0,
        local_rank: int = 0,
        node_rank: int = 0,
        run_id: str | None = None,
        config: dict | None = None,
        resume: bool = False,
    ):
        self.opts = opts
        self.writes_metrics = global_rank == 0
        self.recorder: Recorder | None = None
        if self.writes_metrics or local_rank == 0:
            self.recorder = Recorder(
                opts.store,
                run_name=opts.run_name,
                # resume: the recording process owns run_id, created when missing (a restarted Ray trial)
                run_id=run_id if resume or not self.writes_metrics else None,
                resume=resume and self.writes_metrics,
                framework=framework,
                config=config,
                flush_interval=opts.flush_interval,
                heartbeat_timeout=opts.heartbeat_timeout,
                tags=opts.tags,
                notes=opts.notes,
                group=opts.group,
                # a rank that only samples raises no alerts: the run's metrics are rank 0's
                alerts=opts.alerts if self.writes_metrics else False,
                notify=opts.notify if self.writes_metrics else (),
            )
            if local_rank == 0 and opts.sample_interval is not None:
                self.recorder.start_sampler(opts.sample_interval, node_rank=node_rank, gpus=opts.gpus)
        self.run_id = self.recorder.run_id if self.recorder else run_id
        self.controller = None
        if self.writes_metrics and self.recorder is not None:
            self.controller = opts.make_controller(self.recorder)
            self.recorder.on_requests(self.controller.offer)
        self.monitor = None  # the Monitor shown in a notebook (widget=True), else None
        if self.writes_metrics and self.recorder is not None and opts.widget:
            try:
                from tmon_widgets.auto import maybe_display

                self.monitor = maybe_display(self.run_id, self.recorder.url)
            except Exception as exc:  # never stop a fit for a widget
                warn_once(self, "widget", exc)
        self.ended = False
        self._evaluation = None  # (recorder, stage, step) between begin_evaluation and end_evaluation
        self.report = None  # the tmon_core.Report of this run once it ended (report="auto")
        self._capture = None
        if self.writes_metrics and self.recorder is not None and (opts.capture_logs or opts.capture_output):
            try:
                from .capture import LogCapture

                self._capture = LogCapture(self.recorder, output=opts.capture_output).start()
            except Exception as exc:
                warn_once(self, "capture_logs", exc)

    def event(self, type: str, /, **kw) -> None:
        if self.writes_metrics and self.recorder is not None:
            self.recorder.event(type, **kw)

    def fail(self, exc: BaseException, step: int | None, record_train_end: bool = False) -> None:
        """End the run because ``exc`` escaped the framework's training loop; ``record_train_end``
        also records ``train_end`` with the reason (exception or interrupt) after it."""
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
            if record_train_end:
                self.event(
                    ev.TRAIN_END,
                    step=step,
                    reason=ev.END_INTERRUPT if status == ev.INTERRUPTED else ev.END_EXCEPTION,
                )
        finally:  # whatever happened above, the run ends with the right status
            self.end(status, info)

    def abandon(self, step: int | None) -> None:
        """End a run whose fit stopped without telling its callback how (no end hook, no exception seen)."""
        if self.ended or self.recorder is None:
            return
        info = {
            "type": "unknown",
            "message": "the fit stopped without reaching its end hook; the exception "
            "that stopped it was not seen by tmon",
            "traceback": "",
            "oom": False,
        }
        self.event(ev.EXCEPTION, step=step, message=info["message"], data=info)
        self.end(ev.FAILED, info)

    def end(self, status: str = ev.COMPLETED, error: dict | None = None) -> None:
        if self.ended:
            return
        if self._evaluation is not None:
            self.end_evaluation()
        self.ended = True
        if self._capture is not None:
            try:
                self._capture.stop()
            except Exception as exc:
                warn_once(self, "capture_logs", exc)
        if self.recorder is not None:
            # a rank that only samples must leave the run's status to rank 0
            self.recorder.close(status if self.writes_metrics else None, error)
            if self.writes_metrics and self.opts.report == "auto":
                self._make_report()

    # ------------------------------------------------------------ evaluation after the fit
    def begin_evaluation(self, stage: str, step: int | None = None) -> None:
        """Evaluation after the fit ("test", "validate", "evaluate"): reopen the ended run (a Recorder
        attached by run id, status left as it is) and record an `evaluation_start` event.

        While the fit is still running (evaluation inside it) the live run records it. ``step``
        defaults to the run's last training step, so the evaluation's metrics sit beside the
        training values they judge. Never raises: a failure is one warning and the fit's record
        stays as it was.
        """
        try:
            if not self.writes_metrics or self.recorder is None:
                return
            if self._evaluation is not None:  # a previous evaluation that never ended
                self.end_evaluation()
            rec = self.recorder
            if self.ended:
                rec = _attach_recorder(self)
            at = self._last_step() if step is None else step
            self._evaluation = (rec, stage, at)
            rec.event(ev.EVALUATION_START, step=at, stage=stage)
        except Exception as exc:
            self._evaluation = None
            warn_once(self, "begin_evaluation", exc)

    def log_evaluation(self, metrics: dict, step: int | None = None) -> None:
        """Record an evaluation's metrics (key -> number or one-element tensor) at ``step`` (default:
        the step ``begin_evaluation`` used). Without ``begin_evaluation`` first, one is begun with
        stage "evaluate". A key or value tmon refuses is named in a warning; the others are kept."""
        try:
            if not self.writes_metrics or self.recorder is None or not metrics:
                return
            if self._evaluation is None:
                self.begin_evaluation("evaluate", step)
                if self._evaluation is None:
                    return
            rec, _stage, at = self._evaluation
            at = at if step is None else step
            values = dict(metrics)  # the framework's dict is not ours to keep or change
            try:
                rec.log(values, at)
            except (TypeError, ValueError):
                for k, v in values.items():  # one refused value must not cost the others
                    try:
                        rec.log({k: v}, at)
                    except (TypeError, ValueError) as exc:
                        warn_once(self, f"log_evaluation[{k!r}]", exc)
        except Exception as exc:
            warn_once(self, "log_evaluation", exc)

    def end_evaluation(self, step: int | None = None) -> None:
        """`evaluation_end`, everything written, the attached recorder closed with status=None."""
        evaluation, self._evaluation = self._evaluation, None
        if evaluation is None:
            return
        rec, stage, at = evaluation
        try:
            rec.event(ev.EVALUATION_END, step=at if step is None else step, stage=stage)
        except Exception as exc:
            warn_once(self, "end_evaluation", exc)
        finally:
            if rec is not self.recorder:
                _attached.discard(rec)
                try:
                    rec.close(None)  # None: the run keeps the status its fit gave it
                except Exception as exc:
                    warn_once(self, "end_evaluation", exc)

    def _last_step(self) -> int:
        # the last step logged, as the recorder counts it (0 before any)
        return max(0, self.recorder.next_step - 1)

    def _make_report(self) -> None:
        """The run's report, computed from the store once everything is written; never raises."""
        try:
            from tmon_core.analysis import report

            self.report = report(self.run_id, store=self.recorder.url)
        except Exception as exc:
            warn_once(self, "report", exc)


# recorders attached to an ended run for its evaluation: closed at exit with status None should
# end_evaluation never come (tmon_core's own exit hook would mark the run interrupted)
_attached: weakref.WeakSet = weakref.WeakSet()


def _attach_recorder(session: RunSession) -> Recorder:
    done = session.recorder
    # its metrics sit at the fit's step count (Lightning logs test() at global_step): they must not
    # make the run read one step longer than it trained (Recorder.attach: moves_last_step=False);
    # a metric logged without a step follows the fit's last one (like=done)
    rec = Recorder.attach(
        done.url,
        session.run_id,
        like=done,
        flush_interval=session.opts.flush_interval,
        heartbeat_timeout=session.opts.heartbeat_timeout,
    )
    _attached.add(rec)
    return rec


@atexit.register
def _close_attached() -> None:
    for rec in list(_attached):
        try:
            rec.close(None)
        except Exception:
            pass


__all__ = ["RunSession", "TMonCallbackWarning", "warn_once"]
