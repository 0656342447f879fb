"""Scoring the report on the labelled corpus: what bench/diagnosis.py prints and the test slice asserts."""

from __future__ import annotations

import tmon_core

from .corpus import FAULTS, TIMED, write

SEVERE = ("warning", "critical")


def onset_of(finding) -> int | None:
    """The step a finding says its problem started."""
    if finding.rule == "throughput.stalls":
        steps = finding.evidence.get("steps") or []
        return int(steps[0]) if steps else finding.step
    return finding.step


def is_alarm(f, rule: str) -> bool:
    """A finding of ``rule`` that says something is wrong (an lr change that helped is a report, not an alarm)."""
    return f.rule == rule and (rule != "control.lr_change" or f.evidence.get("verdict") == "hurt")


def judge(specs, url, *, verbose=False):
    rows = []
    for spec in specs:
        rid = write(spec, url)
        r = tmon_core.report(rid, store=url, save=False)
        rows.append((spec, r))
        if verbose:
            print(
                f"  {spec.name:18s} {spec.steps:5d} {spec.noise[:44]:44s} {r.health:8s} "
                f"{[(f.rule.split('.')[1], f.severity[0], f.step) for f in r.findings if f.rule != 'precision.fp32']}"
                f" onset={spec.onset}"
            )
    return rows


def score(rows) -> dict:
    healthy = [(s, r) for s, r in rows if s.fault is None]
    faulty = [(s, r) for s, r in rows if s.fault is not None]
    out = {
        "healthy": len(healthy),
        "faulty": len(faulty),
        "healthy_not_good": [s.name for s, r in healthy if r.health != "good"],
        "rules": {},
    }
    rules = sorted(
        set(FAULTS.values()) | {f.rule for _, r in healthy for f in r.findings if f.severity in SEVERE}
    )
    for rule in rules:
        fa_any = [s.name for s, r in healthy if any(is_alarm(f, rule) for f in r.findings)]
        fa_sev = [
            s.name for s, r in healthy if any(is_alarm(f, rule) and f.severity in SEVERE for f in r.findings)
        ]
        mine = [(s, r) for s, r in faulty if s.rule == rule]
        found, errors, missed = 0, [], []
        for s, r in mine:
            fs = [f for f in r.findings if is_alarm(f, rule)]
            if not fs:
                missed.append(s.name)
                continue
            found += 1
            if s.fault in TIMED and s.onset is not None:
                o = onset_of(fs[0])
                errors.append(
                    (
                        abs(o - s.onset) / s.steps if o is not None else 1.0,
                        s.name,
                        o is not None and o == s.onset,
                    )
                )
        out["rules"][rule] = {
            "fa_any": fa_any,
            "fa_severe": fa_sev,
            "faulty": len(mine),
            "found": found,
            "missed": missed,
            "onset_errors": errors,
        }
    out["found_total"] = sum(v["found"] for v in out["rules"].values())
    # found, and (for a fault with an onset) within 5 % of the run of it; NaN/inf at the exact step
    out["on_time_total"] = out["found_total"] - sum(
        1
        for rule, v in out["rules"].items()
        for e in v["onset_errors"]
        if e[0] > 0.05 or (rule == "stability.nonfinite" and not e[2])
    )
    out["within5_total"] = sum(1 for v in out["rules"].values() for e in v["onset_errors"] if e[0] <= 0.05)
    out["timed_total"] = sum(len(v["onset_errors"]) for v in out["rules"].values())
    return out
