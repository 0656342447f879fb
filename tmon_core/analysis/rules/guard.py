"""What a guard did (``guard`` events, ``tmon_core.guard``) and whether it helped.

``guard.actions`` lists every action (step, action, trigger, attempt, the snapshot restored, the lr
before and after) and judges the outcome from the loss alone:

- *helped* (info): the run ended ``completed`` with a finite last loss, every loss recorded after the
  last action is finite, and it went on falling (the median of the last third of those points below
  the median of their first third) or ended at or below the level before the first action (the
  median of the last ``lr_change_window`` finite points before it);
- *did not help* (warning): a non-finite loss after the last action, or a loss that ended higher
  than before and kept rising;
- *stopped* (warning): the guard stopped the run (``stop`` mode, or it gave up after ``max_skips``
  skips or ``max_retries`` rollbacks); the weights saved are the last finite ones;
- too few points after the last action to judge (fewer than 5): said so (info).

After a rollback that helped, the advice is to start the next run at the learning rate the guard
settled on. The guard's own lr changes are left out of ``control.lr_change`` (a rollback changed
the weights too: the loss after it is the guard's to judge).
"""

from __future__ import annotations

import numpy as np

from ... import events as ev
from ..model import INFO, WARNING, Finding
from . import fmt_value, recommend

MIN_AFTER = 5  # loss points after the last action needed to judge it


def check(d):
    events = d.events_of(ev.GUARD)
    if events.empty:
        return
    actions = [e.data for e in events.itertuples() if isinstance(e.data, dict)]
    if not actions:
        return
    counts = {a: sum(1 for x in actions if x.get("action") == a) for a in ("skip", "rollback", "stop")}
    steps = [int(x["step"]) for x in actions if isinstance(x.get("step"), int)]
    first, last = (min(steps), max(steps)) if steps else (None, None)
    listing = [
        {
            k: x.get(k)
            for k in ("step", "action", "trigger", "attempt", "restored_step", "lr_before", "lr_after")
        }
        for x in actions
    ]
    evidence: dict = {"actions": listing[:50], "counts": counts, "mode": actions[-1].get("mode")}
    what = ", ".join(f"{n} {a}{'s' * (n != 1)}" for a, n in counts.items() if n)
    summary = "; ".join(
        f"step {x['step']}: {x['action']} ({x['trigger']}"
        + (f", back to step {x['restored_step']}" if x.get("restored_step") is not None else "")
        + (
            f", lr {_lrs(x.get('lr_before'))} -> {_lrs(x.get('lr_after'))}"
            if x["action"] == "rollback"
            else ""
        )
        + ")"
        for x in listing[:8]
    ) + ("; ..." if len(listing) > 8 else "")
    stopped = counts["stop"] > 0
    verdict, why = _verdict(d, first, last, evidence)
    evidence["verdict"] = "stopped" if stopped else verdict
    if stopped:
        stop = next(x for x in reversed(actions) if x.get("action") == "stop")
        gave_up = bool(stop.get("gave_up"))
        yield Finding(
            "guard.actions",
            WARNING,
            f"The guard stopped the run at step {stop.get('step')}" + (" (it gave up)" if gave_up else ""),
            f"The guard ({evidence['mode']}) acted {len(actions)} time{'s' * (len(actions) != 1)} ({what}): "
            f"{summary}. It stopped the run on {stop.get('trigger')}; the weights it ended with are the last "
            "finite ones.",
            evidence,
            step=stop.get("step"),
        )
        return
    severity = WARNING if verdict == "did not help" else INFO
    title = {
        "helped": f"The guard acted {len(actions)} time{'s' * (len(actions) != 1)} and the run recovered",
        "did not help": "The guard acted, but the run did not recover",
        "unclear": f"The guard acted {len(actions)} time{'s' * (len(actions) != 1)}",
    }[verdict]
    yield Finding(
        "guard.actions",
        severity,
        title,
        f"The guard ({evidence['mode']}) acted {len(actions)} time{'s' * (len(actions) != 1)} ({what}): "
        f"{summary}. {why}",
        evidence,
        step=first,
    )
    rollbacks = [x for x in actions if x.get("action") == "rollback" and x.get("lr_after")]
    if verdict == "helped" and rollbacks:
        lr = rollbacks[-1]["lr_after"][0]
        if isinstance(lr, (int, float)) and lr > 0:
            yield recommend(
                "guard.actions",
                INFO,
                f"Start at learning rate {fmt_value(lr)}",
                d.terms.lr(),
                lr,
                "the guard had to lower the learning rate to get past a NaN or a divergence; the next "
                "run can start where it settled",
                evidence=evidence,
                current=(rollbacks[0].get("lr_before") or [None])[0],
                priority=30,
            )


def _verdict(d, first, last, evidence) -> tuple[str, str]:
    loss = d.loss
    if loss is None or last is None:
        return "unclear", "No loss was recorded to judge it by."
    after_all = loss.values[loss.steps > last]
    before = loss.finite()
    w = int(d.t.lr_change_window)
    before_vals = before.values[before.steps < first][-w:]
    final = float(loss.values[-1]) if len(loss) else float("nan")
    evidence.update(
        {
            "points_after": int(len(after_all)),
            "nonfinite_after": int((~np.isfinite(after_all)).sum()),
            "final_loss": final if np.isfinite(final) else None,
            "status": d.status,
        }
    )
    if len(after_all) < MIN_AFTER:
        return "unclear", (
            f"Only {len(after_all)} loss point{'s' * (len(after_all) != 1)} came after its last action "
            f"(step {last}): too few to tell whether it helped."
        )
    if not np.isfinite(after_all).all():
        return "did not help", (
            f"{evidence['nonfinite_after']} of the {len(after_all)} losses after its last action (step "
            f"{last}) are non-finite."
        )
    third = max(len(after_all) // 3, 1)
    head, tail = float(np.median(after_all[:third])), float(np.median(after_all[-third:]))
    level = float(np.median(before_vals)) if len(before_vals) else None
    evidence.update({"after_first_third": head, "after_last_third": tail, "before_level": level})
    falling = tail < head
    below = level is not None and tail <= level
    ok = d.status == ev.COMPLETED and np.isfinite(final)
    if ok and (falling or below):
        return "helped", (
            f"After its last action (step {last}) the loss stayed finite and "
            + ("went on falling" if falling else "held")
            + f" ({fmt_value(head)} -> {fmt_value(tail)}"
            + (f"; {fmt_value(level)} before the first action" if level is not None else "")
            + f"); the run completed with a final loss of {fmt_value(final)}."
        )
    if not falling and not below:
        return "did not help", (
            f"After its last action (step {last}) the loss rose ({fmt_value(head)} -> {fmt_value(tail)})"
            + (f", above its level before the first action ({fmt_value(level)})" if level is not None else "")
            + "."
        )
    return "unclear", f"The run ended {d.status}; the loss after its last action stayed finite."


def _lrs(v) -> str:
    if not isinstance(v, list) or not v:
        return "?"
    return ", ".join(fmt_value(x) for x in v[:4]) + (", ..." if len(v) > 4 else "")
