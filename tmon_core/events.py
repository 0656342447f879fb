"""Event types and run statuses tmon writes (module constants that tests and readers import).

Events (``tmon_events.type``), in the order a fit produces them:

``train_start``, ``epoch_start``, ``validation_start``, ``validation_end``, ``epoch_end``,
``checkpoint`` (data: path, size_bytes, epoch, monitor, monitor_value, source), ``train_end``;
and when things go wrong ``exception`` (data: type, message, traceback), ``oom`` (an
out-of-memory error, in place of ``exception``), ``interrupt`` (KeyboardInterrupt).

``train_end`` carries why the fit ended in its data: ``{"reason": <one of END_REASONS>, ...}``
(with e.g. ``callback``: "EarlyStopping", ``monitor``, ``patience`` for ``early_stopping``).

Evaluation after the fit (Lightning ``trainer.test()``/``validate()``, HF ``trainer.evaluate()``,
Keras ``model.evaluate()``) is recorded into the same run, whose status stays as it was, between
``evaluation_start`` and ``evaluation_end`` (data: ``{"stage": "test" | "validate" | "evaluate"}``).

A record the store refused on its own (text it cannot hold, a value out of range) is written as a
``record_refused`` event (data: ``table``, ``field``, ``reason``) while the rest of its batch is kept.

Control (``tmon_core.control``) writes ``param_change``, ``request_rejected``, ``rollback``,
``stopped`` and ``savecheckpoint`` (``source: "guard"`` when a guard decided it, beside its ``guard``
event); the hardware sampler writes ``sampler`` once for what it cannot read.
"""

TRAIN_START = "train_start"
TRAIN_END = "train_end"
EPOCH_START = "epoch_start"
EPOCH_END = "epoch_end"
VALIDATION_START = "validation_start"
VALIDATION_END = "validation_end"
CHECKPOINT = "checkpoint"
EXCEPTION = "exception"
OOM = "oom"
INTERRUPT = "interrupt"
STORE_GAP = "store_gap"  # the store could not be written for a while (data: since, until, dropped_points)
SAMPLER = "sampler"  # what the hardware sampler cannot read here, said once
EVALUATION_START = "evaluation_start"  # evaluation after the fit, recorded into the ended run
EVALUATION_END = "evaluation_end"
RECORD_REFUSED = "record_refused"  # one record the store would not take; the others were written
# a run recorded again after its process ended (a Ray trial restarted after a failure): data:
# previous_status, previous_last_step, framework_step (where the framework resumed), step_offset
RESUMED = "resumed"
# live alerts (``tmon_core.alerts``): data: uid, rule, level, title, evidence, source ("run" or "watch")
ALERT = "alert"
ALERT_DELIVERY = "alert_delivery"  # an alert's delivery outcome (data: uid, delivered, reason, targets, held)
# a guard's action (``tmon_core.guard``), one per action, at the step that fired it (data: action
# "skip" | "rollback" | "stop", trigger "nonfinite" | "divergence", step, attempt, lr_before, lr_after,
# restored_step, mode); the rollback itself, its lr change and the stop are the control events below
# with source "guard"
GUARD = "guard"

# events written by control (``tmon_core.control``): what happened to a request or a schedule item
PARAM_CHANGE = "param_change"  # a parameter changed (data: old, new, mode, label, request_id, source)
REQUEST_REJECTED = "request_rejected"  # a control request refused or failed (data: request_id, kind, ...)
ROLLBACK = "rollback"  # weights (and optimizer state) restored from a checkpoint
STOPPED = "stopped"  # the run stopped on a stop request
SAVE_CHECKPOINT = "savecheckpoint"  # a checkpoint saved on request (the decision class's name, lower case)
STOP = "stop"  # a stop decision resolved without an adapter naming its event (the decision class's name)

# why a fit ended: ``train_end``'s data["reason"]
END_MAX_STEPS = "max_steps"
END_MAX_EPOCHS = "max_epochs"
END_EARLY_STOPPING = "early_stopping"  # an EarlyStopping callback (data: callback, monitor, patience...)
END_STOP_REQUEST = "stop_request"  # tmon's stop control request
END_TIME_LIMIT = "time_limit"  # Lightning max_time, or a framework's own time budget
END_SHOULD_STOP = "should_stop"  # another callback or the user's code asked the loop to stop
END_DATA_EXHAUSTED = "data_exhausted"  # the data ran out before any limit (iterable datasets)
END_EXCEPTION = "exception"
END_INTERRUPT = "interrupt"
END_REASONS = (
    END_MAX_STEPS,
    END_MAX_EPOCHS,
    END_EARLY_STOPPING,
    END_STOP_REQUEST,
    END_TIME_LIMIT,
    END_SHOULD_STOP,
    END_DATA_EXHAUSTED,
    END_EXCEPTION,
    END_INTERRUPT,
)

# the run config's key listing the framework callbacks in use with their settings:
# [{"name": "EarlyStopping", "monitor": "val_loss", "mode": "min", "patience": 3, "min_delta": 0.0},
#  {"name": "ModelCheckpoint", "monitor": "val_loss", "mode": "min", "save_top_k": 2, "save_last": True},
#  {"name": "ReduceLROnPlateau", "monitor": "val_loss", "factor": 0.1, "patience": 10}, ...]
CONFIG_CALLBACKS = "callbacks"

# run statuses
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
LOST = "lost"  # never stored: a reader's verdict on a running run whose heartbeat stopped
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, LOST)
