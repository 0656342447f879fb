"""Learning-rate changes made during the run (``param_change`` events: requests from the widget, the
API or the CLI, schedules, presets) and what the loss did next.

``control.lr_change`` compares the loss over ``lr_change_window`` (50) steps after a change with the
trend of the same window before it (the before-window's mean moved along its own slope, when it has
one beyond its noise), in log space for a positive loss (geometric means): lower by more than 5 %
and beyond three standard errors (of both means and of the trend carried over) helped (info),
higher by as much or non-finite hurt (warning), otherwise no clear effect (info). Advice: a change that helped becomes part of the next run (a
decay: a step schedule at that step; a raise: the initial lr); one that hurt is undone.
"""

from __future__ import annotations

import math

import numpy as np

from ... import events as ev
from ..model import INFO, WARNING, Finding
from . import fmt_value, recommend


def _lr_of(values) -> float | None:
    if isinstance(values, dict):
        for key in ("lr", "lr@0"):
            v = values.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                return float(v)
    return None


def check(d):
    changes = d.events_of(ev.PARAM_CHANGE)
    loss = d.loss
    if changes.empty or loss is None:
        return
    f = loss.finite()
    w = int(d.t.lr_change_window)
    for e in changes.itertuples():
        data = e.data if isinstance(e.data, dict) else {}
        if data.get("source") == "guard":  # a rollback changed the weights too: rules/guard.py judges it
            continue
        old, new = _lr_of(data.get("old")), _lr_of(data.get("new"))
        if old is None or new is None or old == new or e.step is None or e.step != e.step:
            continue
        step = int(e.step)
        yield from _one(d, loss, f, step, old, new, w, data)


def _one(d, loss, f, step, old, new, w, data):
    before = f.values[(f.steps >= step - w) & (f.steps < step)]
    after_all = loss.values[(loss.steps >= step) & (loss.steps < step + w)]
    after = after_all[np.isfinite(after_all)]
    if len(before) < 5 or len(after_all) < 5:
        return
    b_steps = f.steps[(f.steps >= step - w) & (f.steps < step)].astype(float)
    nonfinite = len(after) < len(after_all)
    # in log space when the loss is positive: a share of hard batches or log-normal noise is then
    # symmetric, and the effect is a ratio
    logs = bool((before > 0).all() and (after > 0).all())
    tb = np.log(before) if logs else before
    ta = np.log(after) if logs else after
    b_mean = float(tb.mean())
    xc = b_steps - b_steps.mean()
    sxx = float((xc * xc).sum()) or 1.0
    slope = float((xc * (tb - b_mean)).sum()) / sxx
    resid = tb - b_mean - slope * xc
    slope_var = float((resid * resid).sum()) / max(len(tb) - 2, 1) / sxx
    if slope * slope <= 4 * slope_var:  # no trend to speak of within the noise: the level carries over
        slope, slope_var = 0.0, 0.0
    expected = b_mean + slope * w  # where the old trend would have taken the mean
    scale = 1.0 if logs else (abs(b_mean) or 1.0)
    a_mean = float(ta.mean()) if len(ta) else float("nan")
    effect = (a_mean - expected) / scale if len(ta) else float("inf")
    # a difference inside the run's own noise is no effect, however large it looks: the noise of both
    # means and of the trend carried over the window
    noise = (
        3.0
        * math.sqrt(
            float(tb.var()) / len(tb)
            + slope_var * w * w
            + (float(ta.var()) / len(ta) if len(ta) > 1 else 0.0)
        )
        / scale
    )
    need = math.log1p(0.05) if logs else 0.05
    clear = effect > max(need, noise) if effect > 0 else effect < -max(need, noise)
    verdict = "hurt" if nonfinite or (effect > 0 and clear) else "helped" if clear else "unclear"
    if logs:  # back in loss units: geometric means, the effect as a relative change
        b_mean, a_mean, expected = math.exp(b_mean), math.exp(a_mean), math.exp(expected)
        effect = math.expm1(effect) if math.isfinite(effect) else effect
    direction = "lowered" if new < old else "raised"
    evidence = {
        "step": step,
        "old": old,
        "new": new,
        "window": w,
        "loss_before_mean": b_mean,
        "loss_after_mean": a_mean if len(after) else None,
        "trend_expected_mean": expected,
        "effect": effect if np.isfinite(effect) else None,
        "noise": noise,
        "nonfinite_after": int(len(after_all) - len(after)),
        "source": data.get("source"),
        "request_id": data.get("request_id"),
        "verdict": verdict,
    }
    what = f"The learning rate was {direction} from {fmt_value(old)} to {fmt_value(new)} at step {step}"
    if verdict == "hurt":
        why = (
            "the loss became non-finite after it"
            if nonfinite
            else f"over the next {w} steps the loss averaged {fmt_value(a_mean)} against {fmt_value(expected)} on the "
            "previous trend"
        )
        yield Finding(
            "control.lr_change",
            WARNING,
            f"An lr change at step {step} hurt",
            f"{what}: {why}.",
            evidence,
            step=step,
        )
        yield recommend(
            "control.lr_change",
            WARNING,
            f"Keep the learning rate at {fmt_value(old)}",
            d.terms.lr(),
            old,
            f"the change to {fmt_value(new)} made the loss worse",
            evidence=evidence,
            current=new,
            priority=20,
        )
        return
    if verdict == "unclear":
        yield Finding(
            "control.lr_change",
            INFO,
            f"An lr change at step {step} had no clear effect",
            f"{what}: the loss over the next {w} steps stayed within 5 % of its previous trend.",
            evidence,
            step=step,
        )
        return
    yield Finding(
        "control.lr_change",
        INFO,
        f"An lr change at step {step} helped",
        f"{what}: over the next {w} steps the loss averaged {fmt_value(a_mean)} against "
        f"{fmt_value(expected)} on the previous trend.",
        evidence,
        step=step,
    )
    if new < old:
        gamma = float(f"{new / old:.3g}")
        yield recommend(
            "control.lr_change",
            INFO,
            f"Schedule the decay at step {step}",
            d.terms.milestone_schedule(step, old),
            gamma,
            f"the next run gets the same drop (×{gamma}) at step {step} without anyone watching",
            evidence=evidence,
            current=None,
            priority=40,
        )
    else:
        yield recommend(
            "control.lr_change",
            INFO,
            f"Start at learning rate {fmt_value(new)}",
            d.terms.lr(),
            new,
            "the raised learning rate trained faster; the next run can start there",
            evidence=evidence,
            current=old,
            priority=40,
        )
