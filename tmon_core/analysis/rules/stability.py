"""Optimization dynamics, read from the loss, the validation loss, the learning rate and the gradient norm.

The detectors are ``analysis.detect``'s, incremental (live alerts feed them step by step, the report a
whole run: the same code), each judging the run against its own noise; see there how, and
``bench/diagnosis.py`` for how often they are right on a labelled corpus of healthy and faulty runs.
Each finding carries its ``confidence``.

* ``stability.nonfinite`` (critical; a warning when a guard acted on it and the loss is finite again at
  the end) — the loss became NaN/inf: the exact step, the lr then,
  whether it recovered. Advice: lr ÷ 10, gradient clipping at 1.0 (when none), bf16 instead of fp16.
* ``stability.spikes`` — points far above the run's recent noise (``spike_sigmas`` noise units and
  ``spike_factor`` × the recent median); warning when they recur (3 or more), info otherwise. Advice
  (with the warning): gradient clipping (when none), else lr ÷ 2.
* ``stability.divergence`` — the loss ends >= ``divergence_factor`` (2) × its best, beyond its noise,
  having given back >= 25 % of the progress (critical when all of it). Advice: lr ÷ 2 (from the lr
  when it turned), clipping, the checkpoint nearest the best loss.
* ``stability.plateau`` (info) — over the last third of a run of >= ``plateau_min_steps`` (500)
  steps the loss trend is flat within its confidence (improvement + 2 standard errors <
  ``plateau_improvement``, 2 %) at a constant lr. Advice: an lr schedule that decays on a plateau
  (factor 0.1). ``stability.no_progress`` (warning): it never improved.
* ``stability.overfitting`` (warning) — validation loss >= ``overfit_rise`` (5 %) above its best at
  the last two evaluations (median of three) while the training loss kept falling. Advice, knowing
  the callbacks the run had (``events.CONFIG_CALLBACKS``) and why it ended: early stopping (patience
  2), or lowering an EarlyStopping's patience to 2, or nothing when it has that already; the
  checkpoint of the best evaluation (Lightning and Keras record the evaluation one step before its
  checkpoint), or a ModelCheckpoint on it when none kept it; more weight decay.
* ``stability.grad_explode`` / ``stability.grad_vanish`` (warning) — late gradient norm >=
  ``grad_explode_factor`` (10) × the early one (or non-finite norms), or <= ``grad_vanish_factor``
  (1e-3) × while the loss has not halved. Advice: clip at the early p90 norm; bf16 when fp16.
"""

from __future__ import annotations

import math

import numpy as np

from ... import events as ev
from ... import keys as K
from ...store.checkpoints import saved_after_step
from ..detect import GradDetector, LossDetector, OverfitDetector
from ..model import CRITICAL, INFO, WARNING, Finding
from . import fmt_value, recommend


def _sig(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    if not x or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def loss_detector(t) -> LossDetector:
    """A ``LossDetector`` with the report's thresholds ``t``."""
    return LossDetector(
        divergence_factor=t.divergence_factor,
        plateau_min_steps=t.plateau_min_steps,
        plateau_improvement=t.plateau_improvement,
        spike_sigmas=t.spike_sigmas,
        spike_min_ratio=t.spike_factor,
    )


def check(d):
    loss = d.loss
    found: dict = {}
    if loss is not None and len(loss):
        det = loss_detector(d.t)
        det.update(loss.steps, loss.values, loss.walls)
        found = {x.name: x for x in det.result()}
        if "nonfinite" in found:
            yield from _nonfinite(d, loss, found["nonfinite"])
        if "spikes" in found:
            yield from _spikes(d, loss.key, found["spikes"])
        if "divergence" in found:
            yield from _divergence(d, loss.key, found["divergence"])
        if "plateau" in found or "no_progress" in found:
            yield from _plateau(d, loss.key, found.get("plateau") or found["no_progress"])
        yield from _overfitting(d, det)
    yield from _grad_norm(d, "nonfinite" in found)


# ---------------------------------------------------------------------------- shared advice
def _clip_configured(d) -> bool:
    cur = d.terms.grad_clip().current
    return isinstance(cur, (int, float)) and not isinstance(cur, bool) and cur > 0


def _lr_advice(d, rule, sev, lr, factor, why, evidence, priority):
    setting = d.terms.lr()
    if lr is None or not setting.path:
        return
    new = _sig(lr * factor)
    yield recommend(
        rule,
        sev,
        f"Learning rate {fmt_value(new)}",
        setting,
        new,
        why,
        evidence=evidence,
        current=lr,
        priority=priority,
    )


def _clip_advice(d, rule, sev, value, evidence, priority, why=None):
    setting = d.terms.grad_clip()
    if _clip_configured(d) or not setting.path:
        return
    yield recommend(
        rule,
        sev,
        f"Gradient clipping at {fmt_value(value)}",
        setting,
        value,
        why or "a single bad batch can no longer throw the weights far off",
        evidence=evidence,
        current=setting.current,
        priority=priority,
    )


def _bf16_advice(d, rule, sev, evidence, priority):
    if not d.fp16:
        return
    yield recommend(
        rule,
        sev,
        "bf16 instead of fp16",
        d.terms.precision("bf16-mixed"),
        d.terms.precision_value("bf16-mixed"),
        "bf16 has fp32's exponent range: activations and gradients that overflow fp16 stay finite "
        "(needs an Ampere or newer GPU)",
        evidence={**evidence, "precision": d.precision},
        priority=priority,
    )


# ---------------------------------------------------------------------------- NaN / inf
def _finding(rule, sev, title, detail, x, **kw) -> Finding:
    return Finding(
        rule,
        sev,
        title,
        detail,
        {k: v for k, v in x.evidence.items() if k != "wall_time"},
        step=kw.get("step", x.onset),
        wall_time=kw.get("wall_time", x.evidence.get("wall_time")),
        confidence=x.confidence,
    )


def _nonfinite(d, loss, x):
    step = x.onset
    lr = d.lr_at(step)
    gn = d.series(K.GRAD_NORM)
    grad_then = None
    if gn is not None and len(gn):
        j = int(np.searchsorted(gn.steps, step, side="right")) - 1
        grad_then = float(gn.values[max(j, 0)])
    e = x.evidence
    x.evidence.update(
        {"lr_at_step": lr, "grad_norm_at_step": grad_then, "precision": d.precision, "key": loss.key}
    )
    trend, last, kind, n = e["last_finite_vs_recent_median"], e["last_finite_loss"], e["kind"], e["count"]
    detail = (
        f"The loss ({loss.key}) became {kind} at step {step}"
        + (f" with lr {fmt_value(lr)}" if lr is not None else "")
        + f"; {n} of {e['of_points']} recorded values are non-finite"
        + (
            "; it recovered later."
            if e["recovered"]
            else " and it did not recover: the weights are likely NaN."
        )
        + (
            f" Just before, the loss was {fmt_value(last)}, {trend:.1f}× its recent median."
            if trend and trend >= 1.5
            else ""
        )
    )
    # a guard that acted at or after the onset, on a loss that is finite again by the end: the NaN was
    # real and is said, but the run was saved (guard.actions judges how well); a warning, not critical
    guard = d.events_of(ev.GUARD)
    saved = bool(e["recovered"]) and not guard.empty and bool((guard.step >= step).any())
    sev = WARNING if saved else CRITICAL
    if saved:
        detail += " The guard acted on it (see guard.actions)."
    f = _finding("stability.nonfinite", sev, f"{kind} loss from step {step}", detail, x)
    yield f
    evidence = f.evidence
    yield from _lr_advice(
        d,
        "stability.nonfinite",
        sev,
        lr,
        0.1,
        "a smaller step keeps the update from overshooting into overflow",
        evidence,
        10,
    )
    yield from _clip_advice(d, "stability.nonfinite", sev, 1.0, evidence, 20)
    yield from _bf16_advice(d, "stability.nonfinite", sev, evidence, 15)


# ---------------------------------------------------------------------------- spikes
def _spikes(d, key, x):
    e = x.evidence
    n = e["count"]
    # one outlier is what a noisy run does now and then; spikes that recur are a pattern worth a change
    sev = WARNING if n >= 3 else INFO
    worst = e["worst_step"]
    e.update({"lr_at_worst": d.lr_at(worst), "key": key})
    f = _finding(
        "stability.spikes",
        sev,
        f"{n} loss spike{'s' * (n != 1)}",
        f"The loss jumped far above its recent level {n} time{'s' * (n != 1)} (first at step {x.onset}); "
        f"the worst, at step {worst}, to {fmt_value(e['worst_value'])}: {e['worst_vs_median']:.1f}× the "
        f"recent median, {e['worst_sigmas']:.0f} units of this run's own noise (a spike needs "
        f"{fmt_value(e['threshold_sigmas'])}).",
        x,
    )
    yield f
    if sev != WARNING:
        return
    if not _clip_configured(d) and d.terms.grad_clip().path:
        yield from _clip_advice(
            d,
            "stability.spikes",
            sev,
            1.0,
            f.evidence,
            10,
            "the update of a bad batch is bounded, so one batch cannot undo many steps",
        )
    else:
        yield from _lr_advice(
            d,
            "stability.spikes",
            sev,
            d.lr_at(worst),
            0.5,
            "smaller updates make the optimizer less sensitive to unusual batches",
            f.evidence,
            20,
        )


# ---------------------------------------------------------------------------- divergence
def _after(d, c):
    """The metric step each checkpoint of ``c`` was saved after (``saved_after_step``): the step the
    report's other figures name, where Lightning and Keras record a checkpoint one step later."""
    return c.apply(lambda r: saved_after_step(r.step, d.framework, r.source), axis=1)


def _nearest_checkpoint(d, step: int) -> dict | None:
    c = d.checkpoints
    if c.empty or not c.step.notna().any():
        return None
    c = c[c.step.notna()]
    after = _after(d, c).fillna(-1).astype(int)
    i = (after - step).abs().idxmin()
    row = c.loc[i]
    mv = row.monitor_value
    return {
        "id": int(row.id),
        "path": row.path,
        "step": int(row.step),
        "after_step": int(after.loc[i]),
        "monitor": row.monitor,
        "monitor_value": float(mv) if isinstance(mv, (int, float)) and mv == mv else None,
    }


def _divergence(d, key, x):
    e = x.evidence
    best, final, best_step = e["best_smoothed_loss"], e["final_smoothed_loss"], e["best_step"]
    sev = CRITICAL if e["lost_all"] else WARNING
    lr = d.lr_at(x.onset)
    ckpt = _nearest_checkpoint(d, best_step)
    e.update({"lr_at_turn": lr, "checkpoint_near_best": ckpt, "key": key})
    detail = (
        f"The smoothed loss reached {fmt_value(best)} around step {best_step}, then rose to {fmt_value(final)} "
        "at the end"
        + (f" ({final / best:.1f}× its best)" if best > 0 else "")
        + ("; all the progress of the run is lost." if e["lost_all"] else ".")
    )
    f = _finding("stability.divergence", sev, f"The loss diverged after step {best_step}", detail, x)
    yield f
    yield from _lr_advice(
        d,
        "stability.divergence",
        sev,
        lr,
        0.5,
        "a smaller step keeps the optimizer in the basin it had found",
        f.evidence,
        10,
    )
    yield from _clip_advice(d, "stability.divergence", sev, 1.0, f.evidence, 15)
    if ckpt is not None:
        yield recommend(
            "stability.divergence",
            sev,
            f"Resume from the checkpoint saved after step {ckpt['after_step']}",
            d.terms.load_checkpoint(),
            ckpt["path"],
            f"the weights from before the loss turned (the best smoothed loss was at step {best_step})",
            evidence=f.evidence,
            current=None,
            priority=20,
        )


# ---------------------------------------------------------------------------- plateau
def _plateau(d, key, x):
    e = x.evidence
    q_from, to = e["from_step"], e["to_step"]
    lr_now = d.lr_at(to)
    if x.name == "no_progress":
        e.update({"lr": lr_now, "key": key})
        yield _finding(
            "stability.no_progress",
            WARNING,
            "The loss did not improve",
            f"Over {to - e['from_step']} steps the loss went from {fmt_value(e['start_loss'])} to "
            f"{fmt_value(e['level'])}: the model is not learning (a learning rate far too low or too high, "
            "frozen weights, or labels that do not match the inputs).",
            x,
        )
        return
    lr = d.lr
    if lr is not None and len(lr):
        sel = lr.values[(lr.steps >= q_from) & np.isfinite(lr.values)]
        if len(sel) and float(sel.max()) > float(sel.min()) * 1.01:
            return  # the lr is already being decayed: a plateau under a schedule is its business
    e.update({"lr": lr_now, "key": key})
    f = _finding(
        "stability.plateau",
        INFO,
        f"The loss plateaued from step {q_from}",
        f"From step {q_from} to {to} the loss stayed flat: over the last third its trend improved it by "
        f"{100 * e['improvement']:.2f} % (at most {100 * e['improvement_upper']:.2f} % at 95 % confidence), "
        f"at a constant learning rate{f' of {fmt_value(lr_now)}' if lr_now else ''}.",
        x,
    )
    yield f
    monitor = d.val_loss.key if d.val_loss is not None else key
    if lr_now:
        yield recommend(
            "stability.plateau",
            INFO,
            "Decay the learning rate on a plateau",
            d.terms.plateau_schedule(monitor),
            _sig(lr_now * 0.1),
            "a smaller step size lets the optimizer settle lower once progress stalls (or stop "
            "earlier: the steps since the plateau bought little)",
            evidence=f.evidence,
            current=lr_now,
            value_for_code=0.1,
            priority=30,
        )


# ---------------------------------------------------------------------------- overfitting
def _callback(d, name: str, monitor: str) -> dict | None:
    """The run's ``name`` callback (EarlyStopping, ModelCheckpoint...) watching ``monitor``, from the config."""
    for cb in d.callbacks:
        if name.lower() in str(cb.get("name", "")).lower() and cb.get("monitor") in (None, monitor):
            return cb
    return None


def _best_checkpoint(d, step: int) -> dict | None:
    """A checkpoint of the evaluation at ``step``: the one saved after that step (Lightning and Keras
    record it one step later, as their steps done), else one recorded at it."""
    c = d.checkpoints
    if c.empty or not c.step.notna().any():
        return None
    c = c[c.step.notna()]
    after = _after(d, c)
    exact = c[after == step]
    c = exact if not exact.empty else c[c.step.astype("Int64").isin([step, step + 1])]
    if c.empty:
        return None
    row = c.iloc[0]
    return {
        "id": int(row.id),
        "path": row.path,
        "step": int(row.step),
        "after_step": saved_after_step(row.step, d.framework, row.source),
        "monitor": row.monitor,
    }


def _overfitting(d, loss_det):
    val = d.val_loss
    if val is None:
        return
    x = OverfitDetector(d.t.overfit_rise, train=loss_det.blocks).update(val.steps, val.values)
    if x is None:
        return
    e = x.evidence
    best_step, best = e["best_step"], e["best_value"]
    ckpt = _best_checkpoint(d, best_step)
    e.update({"key": val.key, "checkpoint_at_best": ckpt})
    n_after = e["evaluations_after_best"]
    f = _finding(
        "stability.overfitting",
        WARNING,
        f"Overfitting after step {best_step}",
        f"{val.key} was best at step {best_step} ({fmt_value(best)}) and rose to {fmt_value(e['last_value'])} "
        f"over the next {n_after} evaluations, while the training loss kept falling "
        f"({fmt_value(e['train_loss_at_best'])} → {fmt_value(e['train_loss_at_end'])}).",
        x,
    )
    yield f
    evidence = f.evidence
    t = d.terms
    es = _callback(d, "EarlyStopping", val.key)
    if es is None:
        yield recommend(
            "stability.overfitting",
            WARNING,
            "Early stopping",
            t.early_stopping(val.key),
            2,
            f"training stops once {val.key} has not improved for 2 evaluations: the last "
            f"{n_after} evaluations were wasted",
            evidence=evidence,
            current=None,
            priority=10,
        )
    else:
        patience = es.get("patience", es.get("early_stopping_patience"))
        evidence["early_stopping"] = {**es, "stopped_the_run": d.end_reason == ev.END_EARLY_STOPPING}
        if isinstance(patience, (int, float)) and not isinstance(patience, bool) and patience > 2:
            setting = t.early_stopping(val.key)
            yield recommend(
                "stability.overfitting",
                WARNING,
                f"Lower the early-stopping patience from {fmt_value(patience)} to 2",
                setting,
                2,
                f"the run already stops early; with patience 2 it stops one evaluation sooner after "
                f"{val.key} turns",
                evidence=evidence,
                current=patience,
                priority=10,
                action=f"Lower patience from {fmt_value(patience)} to 2: {setting.code(2)}",
            )
    if ckpt is not None:
        yield recommend(
            "stability.overfitting",
            WARNING,
            f"Keep the checkpoint saved after step {ckpt['after_step']}",
            t.load_checkpoint(),
            ckpt["path"],
            f"the weights with the best {val.key} ({fmt_value(best)})",
            evidence=evidence,
            current=None,
            priority=15,
        )
    elif _callback(d, "ModelCheckpoint", val.key) is None and not (
        d.framework == "hf" and t.save_best(val.key).current
    ):
        # a ModelCheckpoint watching the metric (or HF's load_best_model_at_end) keeps the best already
        setting = t.save_best(val.key)
        near = _nearest_checkpoint(d, best_step)
        yield recommend(
            "stability.overfitting",
            WARNING,
            f"Keep the checkpoint with the best {val.key}",
            setting,
            1 if d.framework == "lightning" else True,
            "no checkpoint of the best evaluation was recorded"
            + (f" (the nearest was saved after step {near['after_step']})" if near else ""),
            evidence=evidence,
            priority=15,
        )
    wd = t.weight_decay()
    if wd.path:
        cur = wd.current if isinstance(wd.current, (int, float)) and not isinstance(wd.current, bool) else 0.0
        opt = (t.optimizer_class() or "").lower()
        new = (
            (0.01 if "adam" in opt or d.framework in ("hf", "keras") else 5e-4)
            if not cur
            else min(0.1, cur * 10)
        )
        if new > cur:
            yield recommend(
                "stability.overfitting",
                WARNING,
                f"Weight decay {fmt_value(new)}",
                wd,
                new,
                "stronger regularization narrows the gap between training and validation loss "
                "(a first value to try; dropout and data augmentation work too)",
                evidence=evidence,
                current=cur,
                priority=20,
            )


# ---------------------------------------------------------------------------- gradient norm
def _grad_norm(d, loss_nonfinite: bool):
    gn = d.series(K.GRAD_NORM)
    if gn is None or len(gn) < 20:
        return
    det = GradDetector(d.t.grad_explode_factor, d.t.grad_vanish_factor)
    for x in det.update(gn.steps, gn.values):
        e = x.evidence
        early, late = e["early_median"], e["late_median"]
        if x.name == "grad_explode":
            if loss_nonfinite:
                return  # the NaN loss is the finding; its advice covers this
            bad = e.get("nonfinite") or 0
            detail = (
                f"The gradient norm grew from a median of {fmt_value(early)} early on to {fmt_value(late)} at "
                "the end"
                + (
                    f"; {bad} norms were non-finite (first at step {e['first_nonfinite_step']})"
                    if bad
                    else ""
                )
                + "."
            )
            f = _finding("stability.grad_explode", WARNING, "Exploding gradient norm", detail, x)
            yield f
            f_ok = gn.finite()
            p90 = float(np.percentile(f_ok.values[: max(len(f_ok) // 2, 1)], 90)) if len(f_ok) else 0.0
            clip = _sig(p90, 1) if p90 > 0 else 1.0
            if not _clip_configured(d) and d.terms.grad_clip().path:
                yield from _clip_advice(
                    d,
                    "stability.grad_explode",
                    WARNING,
                    clip,
                    {**f.evidence, "early_p90": p90},
                    10,
                    f"updates stay at the size of a typical early gradient (p90 {fmt_value(p90)})",
                )
            else:
                yield from _lr_advice(
                    d,
                    "stability.grad_explode",
                    WARNING,
                    d.lr_at(int(gn.steps[-1])),
                    0.5,
                    "clipping is on and the norm still grows: smaller steps",
                    f.evidence,
                    20,
                )
            return
        loss = d.loss
        lf = loss.finite() if loss is not None else None
        if lf is None or len(lf) < 20:
            return
        kk = max(len(lf) // 10, 3)
        l_early, l_late = float(np.median(lf.values[:kk])), float(np.median(lf.values[-kk:]))
        if not (l_early > 0 and l_late > 0.5 * l_early):
            return
        e.update({"loss_early": l_early, "loss_late": l_late})
        f = _finding(
            "stability.grad_vanish",
            WARNING,
            "Vanishing gradient norm",
            f"The gradient norm fell from {fmt_value(early)} to {fmt_value(late)} while the loss only "
            f"went from {fmt_value(l_early)} to {fmt_value(l_late)}: the weights barely move"
            + (
                " (fp16: gradients may underflow)."
                if d.fp16
                else " (saturated activations, dead ReLUs, or a too-deep network without normalization)."
            ),
            x,
        )
        yield f
        yield from _bf16_advice(d, "stability.grad_vanish", WARNING, f.evidence, 10)
