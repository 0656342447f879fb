"""Event types and run statuses tmon writes (module constants that tests and readers import).

Events (``tmon_events.type``), in the order a fit produces them:

``train_start``, ``epoch_start``, ``validation_start``, ``validation_end``, ``epoch_end``,
``checkpoint`` (data: path, size_bytes, epoch, monitor, monitor_value, source), ``train_end``;
and when things go wrong ``exception`` (data: type, message, traceback), ``oom`` (an
out-of-memory error, in place of ``exception``), ``interrupt`` (KeyboardInterrupt).
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

# run statuses
RUNNING = "running"
COMPLETED = "completed"
FAILED = "failed"
INTERRUPTED = "interrupted"
LOST = "lost"  # never stored: a reader's verdict on a running run whose heartbeat stopped
STATUSES = (RUNNING, COMPLETED, FAILED, INTERRUPTED, LOST)
