"""Optimization dynamics, read from the loss, the validation loss, the learning rate and the gradient norm.

* ``stability.nonfinite`` (critical) — the loss became NaN/inf: the step it started, the lr then,
  whether it recovered. Advice: lr ÷ 10, gradient clipping at 1.0 (when none), bf16 instead of fp16.
* ``stability.spikes`` — loss values >= ``spike_factor`` (3) × the median of the preceding window
  and >= ``spike_mads`` (10) robust deviations above it; warning from 3 spikes or one 10× spike,
  info below. Advice: gradient clipping (when none), else lr ÷ 2.
* ``stability.divergence`` — the smoothed loss ends >= ``divergence_factor`` (2) × its best and has
  given back >= 25 % of the progress made (critical when all of it). Advice: lr ÷ 2 (from the lr
  when it turned), clipping, the checkpoint nearest the best loss.
* ``stability.plateau`` (info) — over the last quarter of a run of >= ``plateau_min_steps`` (500)
  steps the loss improved < ``plateau_improvement`` (1 %) at a constant lr. Advice: an lr schedule
  that decays on a plateau (factor 0.1). ``stability.no_progress`` (warning): it never improved.
* ``stability.overfitting`` (warning) — validation loss >= ``overfit_rise`` (5 %) above its best at
  the last two evaluations while the training loss kept falling. Advice: early stopping (patience
  2), the checkpoint of the best evaluation, more weight decay.
* ``stability.grad_explode`` / ``stability.grad_vanish`` (warning) — late median gradient norm >=
  ``grad_explode_factor`` (10) × the early one (or non-finite norms, or 3+ norm spikes), or <=
  ``grad_vanish_factor`` (1e-3) × while the loss has not halved. Advice: clip at the early p90
  norm; bf16 when fp16.
"""

from __future__ import annotations

import math

import numpy as np

from ... import keys as K
from ..model import CRITICAL, INFO, WARNING, Finding
from . import fmt_value, recommend


def _sig(x: float, digits: int = 2) -> float:
    """``x`` rounded to ``digits`` significant digits."""
    if not x or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def check(d):
    loss = d.loss
    state: dict = {}
    if loss is not None and len(loss):
        yield from _nonfinite(d, loss, state)
        f = loss.finite()
        if len(f) >= 50:
            yield from _spikes(d, f)
            if not state.get("nonfinite"):
                yield from _divergence(d, f, state)
                if not state.get("diverged"):
                    yield from _plateau(d, f)
        yield from _overfitting(d, f)
    yield from _grad_norm(d, state)


# ---------------------------------------------------------------------------- shared advice
def _clip_configured(d) -> bool:
    cur = d.terms.grad_clip().current
    return isinstance(cur, (int, float)) and not isinstance(cur, bool) and cur > 0


def _lr_advice(d, rule, sev, lr, factor, why, evidence, priority):
    setting = d.terms.lr()
    if lr is None or not setting.path:
        return
    new = _sig(lr * factor)
    yield recommend(rule, sev, f"Learning rate {fmt_value(new)}", setting, new, why, evidence=evidence,
                    current=lr, priority=priority)


def _clip_advice(d, rule, sev, value, evidence, priority, why=None):
    setting = d.terms.grad_clip()
    if _clip_configured(d) or not setting.path:
        return
    yield recommend(rule, sev, f"Gradient clipping at {fmt_value(value)}", setting, value,
                    why or "a single bad batch can no longer throw the weights far off", evidence=evidence,
                    current=setting.current, priority=priority)


def _bf16_advice(d, rule, sev, evidence, priority):
    if not d.fp16:
        return
    yield recommend(rule, sev, "bf16 instead of fp16", d.terms.precision("bf16-mixed"),
                    d.terms.precision_value("bf16-mixed"),
                    "bf16 has fp32's exponent range: activations and gradients that overflow fp16 stay finite "
                    "(needs an Ampere or newer GPU)", evidence={**evidence, "precision": d.precision},
                    priority=priority)


# ---------------------------------------------------------------------------- NaN / inf
def _nonfinite(d, loss, state):
    bad = ~np.isfinite(loss.values)
    if not bad.any():
        return
    state["nonfinite"] = True
    i0 = int(np.argmax(bad))
    step = int(loss.steps[i0])
    lr = d.lr_at(step)
    v0 = loss.values[i0]
    kind = "NaN" if math.isnan(v0) else "+inf" if v0 > 0 else "-inf"
    after = loss.values[i0 + 1:]
    recovered = bool(np.isfinite(after).any()) and bool(np.isfinite(after[-min(len(after), 10):]).all())
    before = loss.values[:i0][np.isfinite(loss.values[:i0])]
    last = float(before[-1]) if len(before) else None
    trend = float(before[-1] / np.median(before[-50:])) if len(before) >= 5 and np.median(before[-50:]) > 0 else None
    gn = d.series(K.GRAD_NORM)
    grad_then = None
    if gn is not None and len(gn):
        j = int(np.searchsorted(gn.steps, step, side="right")) - 1
        grad_then = float(gn.values[max(j, 0)])
    evidence = {"first_step": step, "kind": kind, "count": int(bad.sum()), "of_points": len(loss),
                "lr_at_step": lr, "last_finite_loss": last, "last_finite_vs_recent_median": trend,
                "grad_norm_at_step": grad_then, "recovered": recovered, "precision": d.precision,
                "key": loss.key}
    detail = (f"The loss ({loss.key}) became {kind} at step {step}"
              + (f" with lr {fmt_value(lr)}" if lr is not None else "")
              + f"; {int(bad.sum())} of {len(loss)} recorded values are non-finite"
              + ("; it recovered later." if recovered else " and it did not recover: the weights are likely NaN.")
              + (f" Just before, the loss was {fmt_value(last)}, {trend:.1f}× its recent median." if trend and trend >= 1.5
                 else ""))
    yield Finding("stability.nonfinite", CRITICAL, f"{kind} loss from step {step}", detail, evidence, step=step,
                  wall_time=float(loss.walls[i0]))
    yield from _lr_advice(d, "stability.nonfinite", CRITICAL, lr, 0.1,
                          "a smaller step keeps the update from overshooting into overflow", evidence, 10)
    yield from _clip_advice(d, "stability.nonfinite", CRITICAL, 1.0, evidence, 20)
    yield from _bf16_advice(d, "stability.nonfinite", CRITICAL, evidence, 15)


# ---------------------------------------------------------------------------- spikes
def _window(n: int) -> int:
    return max(10, min(200, n // 50))


def _blocks(values: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD of consecutive blocks of ``w`` values (the last, partial block included)."""
    n = len(values)
    nb = -(-n // w)
    padded = np.full(nb * w, np.nan)
    padded[:n] = values
    blocks = padded.reshape(nb, w)
    med = np.nanmedian(blocks, axis=1)
    mad = np.nanmedian(np.abs(blocks - med[:, None]), axis=1)
    return med, mad


def spike_mask(values: np.ndarray, factor: float, mads: float) -> tuple[np.ndarray, np.ndarray]:
    """Which values spike above the median of the block before theirs; and each value's reference."""
    w = _window(len(values))
    med, mad = _blocks(values, w)
    ref_med = np.repeat(np.concatenate([med[:1], med[:-1]]), w)[:len(values)]
    ref_mad = np.repeat(np.concatenate([mad[:1], mad[:-1]]), w)[:len(values)]
    rise = values - ref_med
    mask = (rise > mads * 1.4826 * ref_mad) & (rise > (factor - 1) * np.abs(ref_med))
    return mask, ref_med


def _events(mask: np.ndarray) -> np.ndarray:
    """Indices where a run of True values starts."""
    starts = mask & ~np.concatenate([[False], mask[:-1]])
    return np.flatnonzero(starts)


def _spikes(d, f):
    mask, ref = spike_mask(f.values, d.t.spike_factor, d.t.spike_mads)
    starts = _events(mask)
    if not len(starts):
        return
    ratios = np.where(np.abs(ref) > 0, f.values / np.where(ref == 0, 1, np.abs(ref)), np.inf)
    idx = np.flatnonzero(mask)
    worst = int(idx[np.argmax(ratios[idx])])
    max_ratio = float(ratios[worst])
    n = len(starts)
    sev = WARNING if n >= 3 or max_ratio >= 10 else INFO
    evidence = {"count": n, "steps": [int(f.steps[i]) for i in starts[:20]], "worst_step": int(f.steps[worst]),
                "worst_value": float(f.values[worst]), "worst_vs_median": max_ratio,
                "lr_at_worst": d.lr_at(int(f.steps[worst])), "key": f.key}
    yield Finding("stability.spikes", sev, f"{n} loss spike{'s' * (n != 1)}",
                  f"The loss jumped well above its recent level {n} time{'s' * (n != 1)}; the worst, at step "
                  f"{int(f.steps[worst])}, to {fmt_value(float(f.values[worst]))} ({max_ratio:.1f}× the recent median).",
                  evidence, step=int(f.steps[worst]), wall_time=float(f.walls[worst]))
    if sev != WARNING:
        return
    if not _clip_configured(d) and d.terms.grad_clip().path:
        yield from _clip_advice(d, "stability.spikes", sev, 1.0, evidence, 10,
                                "the update of a bad batch is bounded, so one batch cannot undo many steps")
    else:
        lr = d.lr_at(int(f.steps[worst]))
        yield from _lr_advice(d, "stability.spikes", sev, lr, 0.5,
                              "smaller updates make the optimizer less sensitive to unusual batches", evidence, 20)


# ---------------------------------------------------------------------------- divergence
def _smoothed(f) -> tuple[np.ndarray, np.ndarray, int]:
    w = _window(len(f))
    med, _ = _blocks(f.values, w)
    ends = np.minimum(np.arange(1, len(med) + 1) * w, len(f)) - 1
    return med, f.steps[ends], w


def _nearest_checkpoint(d, step: int) -> dict | None:
    c = d.checkpoints
    if c.empty or not c.step.notna().any():
        return None
    c = c[c.step.notna()]
    i = (c.step.astype(int) - step).abs().idxmin()
    row = c.loc[i]
    mv = row.monitor_value
    return {"id": int(row.id), "path": row.path, "step": int(row.step), "monitor": row.monitor,
            "monitor_value": float(mv) if isinstance(mv, (int, float)) and mv == mv else None}


def _divergence(d, f, state):
    sm, ends, w = _smoothed(f)
    if len(sm) < 5:
        return
    b = int(np.argmin(sm))
    best, first, final = float(sm[b]), float(sm[0]), float(sm[-1])
    rise, progress = final - best, first - best
    if b >= len(sm) - 1 or rise <= 0:
        return
    if not (rise > (d.t.divergence_factor - 1) * abs(best) and rise > 0.25 * progress):
        return
    state["diverged"] = True
    best_step, turn_step = int(ends[b]), int(ends[b])
    lost_all = progress > 0 and final >= first
    sev = CRITICAL if lost_all else WARNING
    lr = d.lr_at(turn_step)
    ckpt = _nearest_checkpoint(d, best_step)
    evidence = {"best_smoothed_loss": best, "best_step": best_step, "final_smoothed_loss": final,
                "first_smoothed_loss": first, "window": w, "lr_at_turn": lr, "checkpoint_near_best": ckpt,
                "key": f.key}
    detail = (f"The smoothed loss reached {fmt_value(best)} around step {best_step}, then rose to {fmt_value(final)} "
              "at the end" + (f" ({final / best:.1f}× its best)" if best > 0 else "")
              + ("; all the progress of the run is lost." if lost_all else "."))
    yield Finding("stability.divergence", sev, f"The loss diverged after step {best_step}", detail, evidence,
                  step=best_step)
    yield from _lr_advice(d, "stability.divergence", sev, lr, 0.5,
                          "a smaller step keeps the optimizer in the basin it had found", evidence, 10)
    yield from _clip_advice(d, "stability.divergence", sev, 1.0, evidence, 15)
    if ckpt is not None:
        yield recommend("stability.divergence", sev, f"Resume from the checkpoint at step {ckpt['step']}",
                        d.terms.load_checkpoint(), ckpt["path"],
                        f"the weights from before the loss turned (the best smoothed loss was at step {best_step})",
                        evidence=evidence, current=None, priority=20)


# ---------------------------------------------------------------------------- plateau
def _plateau(d, f):
    span = int(f.steps[-1] - f.steps[0])
    if span < d.t.plateau_min_steps:
        return
    n = len(f)
    q = f.values[-max(n // 4, 20):]
    half = len(q) // 2
    m1, m2 = float(np.median(q[:half])), float(np.median(q[half:]))
    start = float(np.median(f.values[:max(n // 10, 5)]))
    q_from = int(f.steps[-len(q)])
    improvement = (m1 - m2) / abs(m1) if m1 else 0.0
    if improvement >= d.t.plateau_improvement:
        return
    lr = d.lr
    lr_const = True
    lr_now = d.lr_at(int(f.steps[-1]))
    if lr is not None and len(lr):
        sel = lr.values[(lr.steps >= q_from) & np.isfinite(lr.values)]
        lr_const = len(sel) == 0 or float(sel.max()) <= float(sel.min()) * 1.01
    if not lr_const:
        return  # the lr is already being decayed: a plateau under a schedule is its business
    evidence = {"from_step": q_from, "to_step": int(f.steps[-1]), "median_first_half": m1, "median_second_half": m2,
                "improvement": improvement, "start_loss": start, "lr": lr_now, "key": f.key}
    overall = (start - m2) / abs(start) if start else 0.0
    if overall < d.t.plateau_improvement:
        yield Finding("stability.no_progress", WARNING, "The loss did not improve",
                      f"Over {span} steps the loss went from {fmt_value(start)} to {fmt_value(m2)}: the model is not "
                      "learning (a learning rate far too low or too high, frozen weights, or labels that do not "
                      "match the inputs).", {**evidence, "overall_improvement": overall})
        return
    yield Finding("stability.plateau", INFO, f"The loss plateaued from step {q_from}",
                  f"Over the last quarter (steps {q_from}-{int(f.steps[-1])}) the loss changed by "
                  f"{100 * improvement:.2f} % at a constant learning rate{f' of {fmt_value(lr_now)}' if lr_now else ''}.",
                  evidence, step=q_from)
    monitor = d.val_loss.key if d.val_loss is not None else f.key
    if lr_now:
        yield recommend("stability.plateau", INFO, "Decay the learning rate on a plateau",
                        d.terms.plateau_schedule(monitor), _sig(lr_now * 0.1),
                        "a smaller step size lets the optimizer settle lower once progress stalls (or stop "
                        "earlier: the last quarter of the steps bought little)", evidence=evidence, current=lr_now,
                        value_for_code=0.1, priority=30)


# ---------------------------------------------------------------------------- overfitting
def _train_at(f, lo: int, hi: int) -> float | None:
    sel = f.values[(f.steps > lo) & (f.steps <= hi)]
    return float(np.median(sel)) if len(sel) else None


def _overfitting(d, f):
    val = d.val_loss
    if val is None:
        return
    val = val.finite()
    if len(val) < 3 or f is None or not len(f):
        return
    values = val.values
    if len(values) >= 6:  # many evaluations: judge the median of each three, not single noisy ones
        padded = np.concatenate([values[:1], values, values[-1:]])
        values = np.median(np.stack([padded[:-2], padded[1:-1], padded[2:]]), axis=0)
    b = int(np.argmin(values))
    best = float(values[b])
    after = values[b + 1:]
    if len(after) < 2:
        return
    limit = best + d.t.overfit_rise * abs(best)
    if not (after[-1] > limit and after[-2] > limit):
        return
    steps = val.steps
    prev = int(steps[b - 1]) if b > 0 else int(f.steps[0]) - 1
    train_best = _train_at(f, prev, int(steps[b]))
    train_last = _train_at(f, int(steps[-2]), int(steps[-1]))
    if train_best is None or train_last is None or not train_last < train_best * 0.99:
        return
    best_step = int(steps[b])
    ckpt = _nearest_checkpoint(d, best_step)
    evidence = {"key": val.key, "best_step": best_step, "best_value": float(val.values[b]),
                "last_value": float(val.values[-1]),
                "evaluations": len(val), "evaluations_after_best": len(after), "train_loss_at_best": train_best,
                "train_loss_at_end": train_last, "checkpoint_at_best": ckpt}
    yield Finding("stability.overfitting", WARNING, f"Overfitting after step {best_step}",
                  f"{val.key} was best at step {best_step} ({fmt_value(float(val.values[b]))}) and rose to "
                  f"{fmt_value(float(val.values[-1]))} over the next {len(after)} evaluations, while the training loss "
                  f"kept falling ({fmt_value(train_best)} → {fmt_value(train_last)}).", evidence, step=best_step)
    t = d.terms
    yield recommend("stability.overfitting", WARNING, "Early stopping", t.early_stopping(val.key), 2,
                    f"training stops once {val.key} has not improved for 2 evaluations: the last "
                    f"{len(after)} evaluations were wasted", evidence=evidence, current=None, priority=10)
    if ckpt is not None and ckpt["step"] == best_step:
        yield recommend("stability.overfitting", WARNING, f"Keep the checkpoint of step {best_step}",
                        t.load_checkpoint(), ckpt["path"], f"the weights with the best {val.key} ({fmt_value(best)})",
                        evidence=evidence, current=None, priority=15)
    else:
        setting = t.save_best(val.key)
        yield recommend("stability.overfitting", WARNING, f"Keep the checkpoint with the best {val.key}", setting,
                        1 if d.framework == "lightning" else True,
                        "no checkpoint of the best evaluation was recorded" + (
                            f" (the nearest is step {ckpt['step']})" if ckpt else ""),
                        evidence=evidence, priority=15)
    wd = t.weight_decay()
    if wd.path:
        cur = wd.current if isinstance(wd.current, (int, float)) and not isinstance(wd.current, bool) else 0.0
        opt = (t.optimizer_class() or "").lower()
        new = (0.01 if "adam" in opt or d.framework in ("hf", "keras") else 5e-4) if not cur else min(0.1, cur * 10)
        if new > cur:
            yield recommend("stability.overfitting", WARNING, f"Weight decay {fmt_value(new)}", wd, new,
                            "stronger regularization narrows the gap between training and validation loss "
                            "(a first value to try; dropout and data augmentation work too)",
                            evidence=evidence, current=cur, priority=20)


# ---------------------------------------------------------------------------- gradient norm
def _grad_norm(d, state):
    gn = d.series(K.GRAD_NORM)
    if gn is None or len(gn) < 20:
        return
    bad = ~np.isfinite(gn.values)
    f = gn.finite()
    if len(f) < 20:
        return
    k = max(len(f) // 10, 3)
    early, late = float(np.median(f.values[:k])), float(np.median(f.values[-k:]))
    mask, _ = spike_mask(f.values, d.t.grad_explode_factor, d.t.spike_mads)
    n_spikes = len(_events(mask))
    evidence = {"early_median": early, "late_median": late, "nonfinite": int(bad.sum()), "spikes": n_spikes,
                "points": len(gn)}
    explode = (early > 0 and late >= d.t.grad_explode_factor * early) or bad.any() or n_spikes >= 3
    if explode and not state.get("nonfinite"):
        first_bad = int(gn.steps[int(np.argmax(bad))]) if bad.any() else None
        detail = (f"The gradient norm grew from a median of {fmt_value(early)} early on to {fmt_value(late)} at the end"
                  + (f"; {int(bad.sum())} norms were non-finite (first at step {first_bad})" if bad.any() else "")
                  + (f"; it spiked {n_spikes} times" if n_spikes else "") + ".")
        yield Finding("stability.grad_explode", WARNING, "Exploding gradient norm", detail, evidence,
                      step=first_bad)
        p90 = float(np.percentile(f.values[:max(len(f) // 2, 1)], 90))
        clip = _sig(p90, 1) if p90 > 0 else 1.0
        if not _clip_configured(d) and d.terms.grad_clip().path:
            yield from _clip_advice(d, "stability.grad_explode", WARNING, clip, {**evidence, "early_p90": p90}, 10,
                                    f"updates stay at the size of a typical early gradient (p90 {fmt_value(p90)})")
        else:
            yield from _lr_advice(d, "stability.grad_explode", WARNING, d.lr_at(int(f.steps[-1])), 0.5,
                                  "clipping is on and the norm still grows: smaller steps", evidence, 20)
        return
    loss = d.loss
    if early > 0 and late <= d.t.grad_vanish_factor * early and loss is not None:
        lf = loss.finite()
        if len(lf) >= 20:
            kk = max(len(lf) // 10, 3)
            l_early, l_late = float(np.median(lf.values[:kk])), float(np.median(lf.values[-kk:]))
            if l_early > 0 and l_late > 0.5 * l_early:
                evidence.update({"loss_early": l_early, "loss_late": l_late})
                yield Finding("stability.grad_vanish", WARNING, "Vanishing gradient norm",
                              f"The gradient norm fell from {fmt_value(early)} to {fmt_value(late)} while the loss only "
                              f"went from {fmt_value(l_early)} to {fmt_value(l_late)}: the weights barely move"
                              + (" (fp16: gradients may underflow)." if d.fp16 else
                                 " (saturated activations, dead ReLUs, or a too-deep network without normalization)."),
                              evidence)
                yield from _bf16_advice(d, "stability.grad_vanish", WARNING, evidence, 10)
