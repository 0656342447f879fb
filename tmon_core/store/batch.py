"""``Batch``: what the recorder's writer thread collected since the last successful write, and its
cutting into records (what the writer bisects a batch the store refuses along).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Batch:
    """What the writer thread collected since the last successful write."""

    # key -> (steps int64, values float64, wall times float64): numpy arrays, end to end
    points: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = field(default_factory=dict)
    events: list[dict] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    gpu_samples: list[dict] = field(default_factory=list)
    checkpoints: list[dict] = field(default_factory=list)
    logs: list[dict] = field(default_factory=list)
    # (path, how many of this batch's checkpoints were recorded before the removal): a save, a
    # removal and a save of one path in one batch must end with the last save live
    removed_checkpoints: list[tuple[str, int]] = field(default_factory=list)
    request_updates: list[dict] = field(default_factory=list)
    reject_pending: str | None = None  # the run ended: refuse what is still pending, with this reason
    run_update: dict = field(default_factory=dict)
    last_step: int | None = None

    def n_points(self) -> int:
        return sum(len(s) for s, _, _ in self.points.values())

    def n_rows(self) -> int:
        return (
            self.n_points()
            + len(self.events)
            + len(self.samples)
            + len(self.gpu_samples)
            + len(self.checkpoints)
            + len(self.logs)
        )

    def absorb(self, newer: Batch) -> None:
        """Append a newer batch to this (older, unwritten) one."""
        for key, (s, v, w) in newer.points.items():
            mine = self.points.get(key)
            self.points[key] = (
                (s, v, w) if mine is None else tuple(np.concatenate((a, b)) for a, b in zip(mine, (s, v, w)))
            )
        self.events += newer.events
        self.samples += newer.samples
        self.gpu_samples += newer.gpu_samples
        shift = len(self.checkpoints)
        self.removed_checkpoints += [(p, pos + shift) for p, pos in newer.removed_checkpoints]
        self.checkpoints += newer.checkpoints
        self.logs += newer.logs
        self.request_updates += newer.request_updates
        self.reject_pending = newer.reject_pending or self.reject_pending
        self.run_update.update(newer.run_update)
        if newer.last_step is not None:
            self.last_step = newer.last_step

    def records(self) -> list[tuple[str, Any, str, dict]]:
        """This batch as a list of records, in an order that writes the same thing: (what it is,
        its payload, its table, the fields that identify it). A record is a metric's points, one
        row, one removal, one run field. The writer bisects a batch the store refuses along this
        list, rebuilding batches from parts of it with ``of``."""
        out: list[tuple[str, Any, str, dict]] = []
        for key, arrays in self.points.items():
            if len(arrays[0]):
                out.append(
                    (
                        "points",
                        (key, arrays),
                        "tmon_series",
                        {"key": key, "step": int(arrays[0][0]), "points": len(arrays[0])},
                    )
                )
        for attr, table in (
            ("events", "tmon_events"),
            ("samples", "tmon_samples"),
            ("gpu_samples", "tmon_gpu_samples"),
            ("logs", "tmon_logs"),
        ):
            out += [(attr, row, table, row) for row in getattr(self, attr)]
        removals = sorted(self.removed_checkpoints, key=lambda r: r[1])
        j = 0
        for i, row in enumerate(self.checkpoints + [None]):
            while j < len(removals) and removals[j][1] <= i:
                out.append(
                    ("removed_checkpoints", removals[j][0], "tmon_checkpoints", {"path": removals[j][0]})
                )
                j += 1
            if row is not None:
                out.append(("checkpoints", row, "tmon_checkpoints", row))
        out += [("request_updates", upd, "tmon_requests", upd) for upd in self.request_updates]
        out += [("run_update", item, "tmon_runs", {"field": item[0]}) for item in self.run_update.items()]
        if self.reject_pending:
            out.append(("reject_pending", self.reject_pending, "tmon_requests", {}))
        return out

    @staticmethod
    def of(records: list[tuple[str, Any, str, dict]], last_step: int | None) -> Batch:
        """The batch that writes ``records`` (from ``records()``), in their order."""
        b = Batch(last_step=last_step)
        for what, payload, _, _ in records:
            if what == "points":
                b.points[payload[0]] = payload[1]  # (one record per metric)
            elif what == "removed_checkpoints":
                b.removed_checkpoints.append((payload, len(b.checkpoints)))
            elif what == "run_update":
                b.run_update[payload[0]] = payload[1]
            elif what == "reject_pending":
                b.reject_pending = payload
            else:
                getattr(b, what).append(payload)
        return b
