"""The Checkpoints tab: the run's checkpoints (step, metrics, size, tags, description); create one now,
edit tags, delete, diff two (the diff engine: most-changed layers, parameter and metric changes), roll
back (only where the run's control level allows it)."""

from __future__ import annotations

import os
import threading

import bqplot as bq
import ipywidgets as widgets
import numpy as np

from tmon_core.store.checkpoints import saved_after_step

from . import _format as f
from ._series import nice_ticks

CREATE_TIP = "ask the training to save a checkpoint at its next step"
ROLLBACK_TIP = (
    "restore weights and optimizer state from the selected checkpoint (control level admin; click twice)"
)


class CheckpointsTab:
    def __init__(self, monitor):
        self.mon = monitor
        self.ctl = monitor.control
        lay = widgets.Layout
        self.banner = widgets.HTML()
        self.table = widgets.HTML()
        self.pick = widgets.SelectMultiple(
            options=[],
            rows=6,
            layout=lay(width="420px"),
            description="select",
            style={"description_width": "50px"},
        )
        self.description = widgets.Text(placeholder="description", layout=lay(width="260px"))
        self.tags = widgets.Text(placeholder="tags, comma separated", layout=lay(width="200px"))
        self.create = widgets.Button(
            description="create checkpoint",
            icon="save",
            button_style="primary",
            tooltip=CREATE_TIP,
            layout=lay(width="170px"),
        )
        self.edit_tags = widgets.Text(
            placeholder="tags for the selected checkpoints", layout=lay(width="260px")
        )
        self.save_tags = widgets.Button(description="save tags", icon="tag", layout=lay(width="110px"))
        self.delete = widgets.Button(
            description="delete",
            icon="trash",
            button_style="danger",
            tooltip="delete the selected checkpoint files (click twice)",
            layout=lay(width="110px"),
        )
        self.diff = widgets.Button(
            description="diff the two selected", icon="columns", layout=lay(width="180px")
        )
        self.rollback = widgets.Button(
            description="roll back",
            icon="undo",
            button_style="warning",
            tooltip=ROLLBACK_TIP,
            layout=lay(width="110px"),
        )
        self.status = widgets.HTML()
        self.diff_out = widgets.VBox()
        self.create.on_click(lambda _b: self._create())
        self.save_tags.on_click(lambda _b: self._save_tags())
        self.delete.on_click(lambda _b: self._confirm("delete", self._delete))
        self.rollback.on_click(lambda _b: self._confirm("roll back", self._rollback))
        self.diff.on_click(lambda _b: self._diff())
        self._armed: str | None = None
        self._rows = None
        self._diff_thread: threading.Thread | None = None
        self.last_diff = None
        self.widget = widgets.VBox(
            [
                self.banner,
                widgets.HBox([self.description, self.tags, self.create]),
                self.table,
                widgets.HBox(
                    [
                        self.pick,
                        widgets.VBox(
                            [
                                widgets.HBox([self.edit_tags, self.save_tags]),
                                widgets.HBox([self.diff, self.rollback, self.delete]),
                            ]
                        ),
                    ]
                ),
                self.status,
                self.diff_out,
            ]
        )

    # ------------------------------------------------------------------ refresh (monitor lock held)
    def refresh(self) -> None:
        rs = self.mon.runs[0] if self.mon.runs else None
        if rs is None:
            return
        self.gate()
        df = rs.run.checkpoints()
        self._rows = df
        loss_key = self.mon.loss_key()
        framework = rs.info.get("framework")
        rows = []
        for r in df.itertuples(index=False):
            # the metric step whose update it holds (Lightning records global_step, one past it)
            step = saved_after_step(r.step, framework, f.text(r.source) or None)
            row = {
                "id": r.id,
                "after step": step,
                "epoch": r.epoch,
                "monitor": f"{r.monitor} = {f.number(r.monitor_value)}" if f.text(r.monitor) else "",
                "size": f.size(r.size_bytes),
                "tags": ", ".join(r.tags or []),
                "description": f.text(r.description),
                "file": os.path.basename(r.path),
                "source": f.text(r.source),
            }
            if loss_key and step is not None:
                row[loss_key] = self.mon.value_at(loss_key, step)
            rows.append(row)
        cols = (
            ["id", "after step", "epoch", "source", "monitor"]
            + ([loss_key] if loss_key else [])
            + ["size", "tags", "description", "file"]
        )
        self.table.value = f.table(rows, cols, empty="no checkpoints recorded yet")
        opts = [
            (
                f"#{r['id']} · after step {r['after step']} · {r['file']}"
                + (f" · {r['tags']}" if r["tags"] else ""),
                int(r["id"]),
            )
            for r in rows
        ]
        if opts != list(self.pick.options):
            keep = tuple(v for v in self.pick.value if v in {o[1] for o in opts})
            with self.mon.quiet():
                self.pick.options = opts
                self.pick.value = keep
        self._status()

    def gate(self) -> None:
        """What the run's policy and the kernel allow now: the banner, enabled buttons (no store read)."""
        self.banner.value = self.ctl.banner("manage")
        self.ctl.gate_button(self.create, "manage", CREATE_TIP, "primary")
        self.ctl.gate_button(self.rollback, "admin", ROLLBACK_TIP, "warning")

    def _status(self) -> None:
        mine = [s for s in self.ctl.sent if s.kind in ("checkpoint", "rollback")]
        if mine:
            self.status.value = "".join(s.html() for s in mine[-3:])

    # ------------------------------------------------------------------ actions (main thread)
    def _say(self, html: str) -> None:
        self.status.value = html

    def _create(self) -> None:
        tags = [t.strip() for t in self.tags.value.split(",") if t.strip()]
        desc = self.description.value.strip() or None
        try:
            self.ctl.submit(
                "checkpoint",
                "create checkpoint",
                lambda run: run.request_checkpoint(desc, tags, source="widget"),
            )
        except Exception as exc:
            self._say(f.note(f"not sent: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"))
            return
        self.mon.refresh()

    def _selected(self, n: int | None = None) -> list[int] | None:
        ids = list(self.pick.value)
        if n is not None and len(ids) != n:
            self._say(
                f.note(
                    f"select {'one checkpoint' if n == 1 else f'{n} checkpoints'} in the list "
                    f"(selected: {len(ids)})",
                    "warn",
                )
            )
            return None
        if not ids:
            self._say(f.note("select checkpoints in the list first", "warn"))
            return None
        return ids

    def _save_tags(self) -> None:
        ids = self._selected()
        if ids is None:
            return
        tags = [t.strip() for t in self.edit_tags.value.split(",") if t.strip()]
        run = self.mon.runs[0].run
        try:
            for cid in ids:
                run.tag_checkpoint(cid, tags)
        except Exception as exc:
            self._say(f.note(f"tags not saved: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"))
            return
        self._say(
            f.note(
                f"tags of {', '.join(f'#{i}' for i in ids)} set to {f.esc(', '.join(tags) or '(none)')}", "ok"
            )
        )
        self.mon.refresh()

    def _confirm(self, what: str, action) -> None:
        ids = self._selected(1 if what == "roll back" else None)
        if ids is None:
            return
        key = f"{what}:{ids}"
        if self._armed != key:
            self._armed = key
            self._say(
                f.note(f"click <b>{what}</b> again to {what} {', '.join(f'#{i}' for i in ids)}", "warn")
            )
            return
        self._armed = None
        action(ids)

    def _delete(self, ids: list[int]) -> None:
        run = self.mon.runs[0].run
        try:
            for cid in ids:
                run.delete_checkpoint(cid)
        except Exception as exc:
            self._say(f.note(f"delete failed: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"))
            return
        self._say(f.note(f"deleted {', '.join(f'#{i}' for i in ids)}", "ok"))
        self.mon.refresh()

    def _rollback(self, ids: list[int]) -> None:
        cid = ids[0]
        try:
            self.ctl.submit(
                "rollback", f"roll back to #{cid}", lambda run: run.rollback(cid, source="widget")
            )
        except Exception as exc:
            self._say(f.note(f"not sent: {f.esc(f'{type(exc).__name__}: {exc}')}", "error"))
            return
        self.mon.refresh()

    # ------------------------------------------------------------------ diff
    def _diff(self) -> None:
        ids = self._selected(2)
        if ids is None:
            return
        a, b = sorted(ids)
        self._say(f.note(f"comparing #{a} with #{b}…"))
        self._diff_thread = threading.Thread(
            target=self._diff_worker, args=(a, b), name="tmon-widget-diff", daemon=True
        )
        self._diff_thread.start()

    def _diff_worker(self, a: int, b: int) -> None:
        try:
            from tmon_core.diff import diff

            d = diff(a, b, store=self.mon.store)
        except Exception as exc:
            self._say(
                f.note(f"diff of #{a} and #{b} failed: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
            )
            return
        with self.mon.lock:
            self.show_diff(d)
            self._say(
                f.note(
                    f"#{a} → #{b}: {d.summary['changed']} of {d.summary['tensors']} tensors changed "
                    f"in {d.summary.get('seconds', 0):.2f} s",
                    "ok",
                )
            )

    def _when(self, side: dict) -> str:
        """'after step N' as the table says it, for a checkpoint of this run; else its stored step."""
        rs = self.mon.runs[0] if self.mon.runs else None
        rows = self._rows
        if rows is None and rs is not None:  # the tab was not drawn yet
            try:
                rows = rs.run.checkpoints()
            except Exception:
                rows = None
        if rows is not None and rs is not None and side.get("id") is not None and len(rows):
            match = rows[rows.id == side["id"]]
            if len(match):
                r = match.iloc[0]
                after = saved_after_step(r.step, rs.info.get("framework"), f.text(r.source) or None)
                if after is not None:
                    return f"after step {after}"
        return f"step {side.get('step')}"

    def show_diff(self, d, top: int = 15) -> None:
        """Render a ``CheckpointDiff``: a bar chart of the most-changed layers, parameter and metric tables."""
        self.last_diff = d
        t = d.top(top)
        names = _bar_labels([str(n) for n in t.name][::-1])
        vals = np.nan_to_num(t.rel_change.to_numpy(np.float64), nan=0.0, posinf=0.0, neginf=0.0)[::-1]
        # an explicit range: all-zero changes (identical checkpoints) are a zero-width domain, on which
        # bqplot's axis format fails ("invalid format") and its ticks pile up on one value
        top_value = float(vals.max()) if len(vals) else 0.0
        hi = top_value * 1.05 if top_value > 0 else 1.0
        xs, ys = bq.OrdinalScale(), bq.LinearScale(min=0.0, max=hi)
        bars = bq.Bars(
            x=names,
            y=vals,
            scales={"x": xs, "y": ys},
            orientation="horizontal",
            colors=["#1f77b4"],
            tooltip=bq.Tooltip(fields=["x", "y"], labels=["tensor", "relative change"], formats=["", ".3g"]),
        )
        fig = bq.Figure(
            marks=[bars],
            title=f"most-changed tensors (relative change ‖b−a‖/‖a‖, top {len(t)})",
            axes=[
                bq.Axis(scale=xs, side="left", tick_style={"font-size": "10px"}),
                # round ticks (0, 10, 20 ... not 0, 12, 23 ...: bqplot spaces num_ticks evenly)
                bq.Axis(
                    scale=ys,
                    side="bottom",
                    label="relative change",
                    tick_format=".2~g",
                    tick_values=nice_ticks(0.0, hi),
                ),
            ],
            fig_margin={"top": 36, "bottom": 42, "left": 260, "right": 20},
            animation_duration=0,
            layout=widgets.Layout(height=f"{max(220, 22 * len(t) + 80)}px", width="auto"),
        )
        s = d.summary
        head = (
            f"<b>#{s['a'].get('id')} ({self._when(s['a'])}) → #{s['b'].get('id')} ({self._when(s['b'])})"
            f"</b>: {f.esc(d.counts())}; overall {f.esc(d.overall())}"
        )
        parts = [head]
        if len(d.params):
            parts.append("<h4>parameters that differ</h4>" + d.params.to_html(index=False, na_rep="-"))
        else:
            parts.append("<h4>parameters</h4>no differences")
        if d.changes:
            parts.append(
                "<h4>changes tmon applied between them</h4>"
                + f.table(
                    [
                        {"step": c.get("step"), "change": c.get("change"), "source": c.get("source")}
                        for c in d.changes
                    ],
                    ["step", "change", "source"],
                )
            )
        if len(d.metrics):
            parts.append(
                "<h4>metrics at each checkpoint</h4>"
                + f.table(_metric_rows(d.metrics), list(d.metrics.columns))
            )
        if d.notes:
            parts.append("<h4>notes</h4><ul>" + "".join(f"<li>{f.esc(n)}</li>" for n in d.notes) + "</ul>")
        self.diff_out.children = [widgets.HTML(parts[0]), fig, widgets.HTML("".join(parts[1:]))]


def _bar_labels(names: list[str], width: int = 40) -> list[str]:
    """Tensor names as the bar chart's left axis can show them (its margin holds about 40 characters):
    a long name keeps its end, where the layer and the tensor are named (``…layers.11.attn.k_proj.weight``);
    names that would become equal stay whole (an ordinal axis needs them distinct)."""
    short = [n if len(n) <= width else "…" + n[-(width - 1) :].lstrip(".") for n in names]
    return short if len(set(short)) == len(short) else names


def _metric_rows(df) -> list[dict]:
    """The diff's metrics for people: a wall time as a clock time and the seconds between (not 1.796183e+09),
    numbers at 4 significant digits, missing values as '-'."""
    rows = []
    for r in df.to_dict("records"):
        r = {k: (None if f.text(v) == "" else v) for k, v in r.items()}
        if str(r.get("key", "")).endswith("wall_time"):
            a, b = r.get("a"), r.get("b")
            r["a"], r["b"] = f.clock(a) if a is not None else "-", f.clock(b) if b is not None else "-"
            r["change"] = f"+{f.duration(b - a)}" if a is not None and b is not None and b >= a else "-"
        rows.append({k: ("-" if v is None else v) for k, v in r.items()})
    return rows
