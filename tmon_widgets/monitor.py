"""``Monitor``: a live view of a tmon run in a notebook, and the controls to steer it.

>>> from tmon_widgets import Monitor
>>> Monitor()                          # the latest run of the default store     # doctest: +SKIP
>>> Monitor(run_id, store=url)         # any run, e.g. one training on another machine into PostgreSQL
>>> Monitor(runs=[a, b, c])            # compare runs
>>> Monitor(group="sweep-3")           # compare a group's runs (a sweep's trials), joined by later ones

Reads through ``tmon_core``'s query and control APIs only. A thread of its own refreshes the view
every ``interval`` seconds (0.5 by default) with incremental reads, so charts move while
``trainer.fit()`` blocks the cell and when the run is written by another process; at most
``max_points`` points per line reach the browser, and each line's x and y travel in one message
(``hold_sync``).
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
import weakref

import ipywidgets as widgets

from tmon_core.store import Run, Store, open_store

from . import _format as f
from . import _live
from ._alerts import Alerts
from ._control import Control
from ._group import GroupView
from ._refresher import RefreshThread
from ._runs import RunState
from .checkpoints import CheckpointsTab
from .events import EventsTab
from .hardware import HardwareTab
from .header import Header
from .metrics import MetricsTab
from .parameters import ParametersTab
from .report import ReportTab

TAB_TITLES = ("Metrics", "Hardware", "Checkpoints", "Parameters", "Report", "Events")
#: seconds between reads of what changes slowly (events, latest values, run list, hardware, requests)
SLOW_INTERVAL = 2.0
#: seconds between refreshes of the tabs the browser may show while the kernel cannot tell which
BLIND_INTERVAL = 5.0
#: the main thread must be inside a cell this long before the controls say clicks would queue
BUSY_AFTER = 1.0

_monitors: weakref.WeakSet = weakref.WeakSet()


class Monitor(widgets.VBox):
    """A live view of one run (or several, compared), with controls that steer it.

    Args:
        run: a run id, a unique prefix of one, a run name, ``"latest"`` or a ``tmon_core.Run``;
            default: the latest run of the store (the Monitor waits for one if there is none yet).
        store: a store URL, a SQLite path or an open ``tmon_core.Store``; default ``$TMON_STORE`` or
            ``sqlite:///tmon.db``.
        runs: several runs to compare (overlaid on the same charts; the first one is steered).
        group: compare the runs of this group (``TMonCallback(group=...)``), in the order they
            started, with a table of their settings; trials that start later join (``_group.py``).
        interval: seconds between refreshes; None: no refresh thread (call :meth:`refresh`).
        max_points: the most points per line sent to the browser.
        metrics: the metric keys shown first (default: the loss family, validation metrics, lr).
        x: ``"step"``, ``"epoch"`` or ``"time"``.
    """

    def __init__(
        self,
        run=None,
        *,
        store=None,
        runs=None,
        interval: float | None = 0.5,
        max_points: int = 2000,
        metrics: list[str] | None = None,
        x: str = "step",
        group: str | None = None,
        _resolve=None,
        _waiting: str | None = None,
    ):
        super().__init__()
        if interval is not None and (not isinstance(interval, (int, float)) or interval < 0.05):
            raise ValueError(f"interval must be >= 0.05 seconds or None, received interval={interval!r}")
        if not isinstance(max_points, int) or isinstance(max_points, bool) or max_points < 4:
            raise ValueError(f"max_points must be an int >= 4, received max_points={max_points!r}")
        if (run is not None) + (runs is not None) + (group is not None) > 1:
            raise ValueError("give one of run=, runs= or group=")
        self.lock = threading.RLock()
        self.interval, self.max_points = interval, max_points
        self._own_store = not isinstance(store, Store)
        self.store: Store = store if isinstance(store, Store) else open_store(store)
        self.runs: list[RunState] = []
        self.alerts = Alerts()
        self.events = None  # the primary run's events (a DataFrame), read every SLOW_INTERVAL
        self.latest: dict[str, dict] = {}  # run id -> {key: (step, value)}
        self._latest_at: dict[str, int | None] = {}  # run id -> the run row's last step at that read
        self._latest_keys: dict[str, set] = {}  # run id -> the metric keys at the last read of them all
        self.updating = False
        self.busy = False
        self._busy_since: float | None = None
        self._busy_probe = _live.main_thread_in_cell
        self.refresh_count = 0
        self.last_refresh_s = 0.0
        self.refresh_total_s = 0.0  # wall seconds spent refreshing (the benchmark reads it)
        self.refresh_cpu_s = 0.0  # CPU seconds of the refreshing thread spent in them
        self._last_slow = -1e9
        self._last_blind = -1e9
        self._slow_count = 0
        self._value_cache: dict = {}
        self._error: str | None = None
        self._everything = False  # the last refresh: every tab, whichever the browser shows
        self._refresher = RefreshThread(self.refresh, self._ended, self._last_refresh, interval)
        self.control = Control(self)

        refs = list(runs) if runs is not None else ([run] if run is not None else [])
        self.group = GroupView(self, group) if group is not None else None
        if self.group is not None:
            refs = self.group.trial_ids()
            _resolve = _resolve or self.group.first
            _waiting = _waiting or f"waiting for a run in group {group!r} of {self.store}"
        self._resolve = _resolve
        self.waiting_for = _waiting or f"waiting for a run in {self.store}"
        if not refs and _resolve is None:
            self._resolve = self._latest_id
        self.header = Header(self)
        self.metrics = MetricsTab(self, metrics=metrics, x=x)
        self.hardware = HardwareTab(self)
        self.checkpoints = CheckpointsTab(self)
        self.parameters = ParametersTab(self)
        self.report = ReportTab(self)
        self.events_tab = EventsTab(self)
        self._tabs = [
            self.metrics,
            self.hardware,
            self.checkpoints,
            self.parameters,
            self.report,
            self.events_tab,
        ]
        # Only the shown tab's widgets are in the page: a bqplot figure in a hidden tab is laid out at
        # width 0 and logs "<rect> attribute width: A negative value" for every redraw.
        self._slots = [widgets.Box(layout=widgets.Layout(width="100%")) for _ in self._tabs]
        self._slots[0].children = [self._tabs[0].widget]
        self.tabs = widgets.Tab(children=self._slots, titles=TAB_TITLES)
        self.tabs.observe(self._on_tab, names="selected_index")
        self.footer = widgets.HTML()
        self.children = [
            self.header.widget,
            *([self.group.widget] if self.group else []),
            self.tabs,
            self.footer,
        ]
        self.add_class("tmon-monitor")
        if refs:
            self._attach(refs)
        self.refresh(slow=True)
        _monitors.add(self)
        if interval is not None:
            self._refresher.start()

    # ------------------------------------------------------------------ runs
    def _latest_id(self) -> str | None:
        r = self.store.latest_run()
        return r.id if r is not None else None

    def _run(self, ref) -> Run:
        if isinstance(ref, Run):
            return ref if ref.store is self.store else self.store.run(ref.id)
        if ref == "latest":
            r = self.store.latest_run()
            if r is None:
                raise KeyError(f"{self.store} holds no runs yet")
            return r
        return self.store.run(ref)

    def _attach(self, refs) -> None:
        seen = {rs.id for rs in self.runs}
        for ref in refs:
            run = self._run(ref)
            if run.id in seen:
                continue
            seen.add(run.id)
            self.runs.append(RunState(run, f.PALETTE[len(self.runs) % len(f.PALETTE)]))
        self.metrics.mark_dirty()

    def set_overlays(self, run_ids: list[str]) -> None:
        """Show these runs over the primary one (compare mode); [] shows the primary run alone."""
        with self.lock:
            if not self.runs:
                return
            self.runs = self.runs[:1]
            self._attach(run_ids)
            self.metrics.drop_series()
            self._last_slow = -1e9
        self.refresh()

    def run_name(self, run_id: str) -> str:
        return next((rs.name for rs in self.runs if rs.id == run_id), run_id[:8])

    @property
    def run(self) -> Run | None:
        """The primary run (the one the controls steer)."""
        return self.runs[0].run if self.runs else None

    # ------------------------------------------------------------------ helpers for the tabs
    @contextlib.contextmanager
    def quiet(self):
        """Set widget values without their observers acting as if the user had changed them."""
        prev, self.updating = self.updating, True
        try:
            yield
        finally:
            self.updating = prev

    def wake(self) -> None:
        self._refresher.wake()

    def loss_key(self) -> str | None:
        keys = self.metrics.keys
        if "loss" in keys:
            return "loss"
        cands = [k for k in keys if "loss" in k and not k.startswith(("val", "eval", "test"))]
        return sorted(cands, key=len)[0] if cands else None

    def value_at(self, key: str, step: int):
        """The last value of ``key`` logged at or before ``step`` in the primary run (cached)."""
        ck = (self.runs[0].id, key, step)
        if ck in self._value_cache:
            return self._value_cache[ck]
        try:
            df = self.runs[0].run.metrics(key, start=max(0, step - 256), end=step)
        except KeyError:
            return None
        v = float(df.value.iloc[-1]) if len(df) else None
        self._value_cache[ck] = v
        return v

    # ------------------------------------------------------------------ refresh
    def refresh(self, slow: bool = False) -> float:
        """Read what changed and update the view; returns the seconds it took."""
        with self.lock:
            t0, c0 = time.perf_counter(), time.thread_time()
            try:
                self._refresh(slow)
                self._error = None
            except Exception as exc:
                self._error = "".join(traceback.format_exception_only(type(exc), exc)).strip()
                self.footer.value = f.note(f"refresh failed: {f.esc(self._error)} (retrying)", "error")
                raise
            else:
                if self.footer.value and "refresh failed" in self.footer.value:
                    self.footer.value = ""
            self.last_refresh_s = time.perf_counter() - t0
            self.refresh_total_s += self.last_refresh_s
            self.refresh_cpu_s += time.thread_time() - c0
            self.refresh_count += 1
            return self.last_refresh_s

    def _refresh(self, slow: bool) -> None:
        if not self.runs and self._resolve is not None:
            rid = self._resolve()
            if rid:
                self._attach([rid])
                slow = True
        if not self.runs:
            self.header.render()
            return
        for rs in self.runs:
            rs.refresh()
        now = time.monotonic()
        slow = slow or now - self._last_slow >= SLOW_INTERVAL
        if slow:
            self._last_slow = now
            self._read_slow()
        self._update_busy()
        self._fill_slots()
        visible = self._tabs[self.tabs.selected_index or 0]
        # while a cell runs, the kernel does not hear which tab the browser shows: keep every tab current
        blind = self.busy or self._everything

        if visible is self.metrics or blind or slow:
            self.metrics.refresh(slow)
            read = self._take_fed()
            read = self._read_latest() or read
            if self._sync_latest() or read:
                self.metrics.show_latest()
        # a tab the kernel cannot see is shown: refreshed at a slower pace (what it reads grows with the run)
        blind_due = blind and (self._everything or now - self._last_blind >= BLIND_INTERVAL)
        if blind_due:
            self._last_blind = now
        if (slow and visible is self.hardware) or blind_due or (slow and self._slow_count % 5 == 1):
            self.hardware.read()
        if (visible is self.hardware and slow) or blind_due:
            self.hardware.render()
        polled = self.control.poll() if self.control.pending else False
        for tab in (self.checkpoints, self.parameters):
            tab.gate()
            if (
                (visible is tab and (slow or polled or self.control.pending))
                or blind_due
                or (blind and polled)
            ):
                tab.refresh()
            elif tab is self.parameters and slow:
                tab.show_current()
        if (visible is self.events_tab and slow) or blind_due:
            self.events_tab.refresh()
        if visible is self.report:
            self.report.refresh()
        note = None
        if self.busy and self.runs[0].running:
            note = (
                "<b>busy kernel</b>: this kernel is running a cell: the charts keep updating, but clicks on the controls "
                "are queued until the cell ends (Parameters tab says how to steer now)"
            )
        self.header.render(note)

    def _read_slow(self) -> None:
        self._slow_count += 1
        if self.group is not None:
            self.group.pick_up()
        primary = self.runs[0]
        for rs in self.runs:  # each run's new events; a compared run's give only its recorded alerts
            new = rs.events.read()
            if rs is primary:
                self.alerts.from_events(rs.id, new)
            self.alerts.from_recorded(rs.id, new)
        self.events = primary.events.frame
        for rs in self.runs:
            # every metric's last point was read with the charts' points; only a metric first seen since
            # (its points came before the reads knew it) asks for a read of them all
            keys = set(rs.run.metric_keys())
            if rs.id not in self._latest_keys or not keys <= self._latest_keys[rs.id]:
                self._read_latest(rs)
                self._latest_keys[rs.id] = keys
            rs.measure_rate(list(self.latest[rs.id]))
            if rs.status == "lost":
                self.alerts.add(
                    rs.id,
                    "lost",
                    f"no heartbeat for {rs.info.get('heartbeat_timeout', 0):.0f} s: "
                    "the training process may be gone",
                    level="critical",
                    dedupe="lost",
                )
        if self.runs and self._slow_count % 5 == 1:  # the store's run list, for the overlay picker
            self.metrics.update_overlay_options(self.store.runs())

    def _read_latest(self, only=None) -> bool:
        """Read the last point of every metric of each run (``only``: that run) whose run row moved since
        the last read: the latest-values table and the header's epoch then say the step the header says
        (one query per metric, once per flush, not per tick). True when something was read."""
        read = False
        for rs in [only] if only is not None else self.runs:
            if only is None and self._latest_at.get(rs.id) == rs.last_step:
                continue
            self._latest_at[rs.id] = rs.last_step
            self.latest[rs.id] = rs.run.latest()
            if "epoch" in self.latest[rs.id]:
                rs.epoch = self.latest[rs.id]["epoch"][1]
            read = True
        return read

    def _take_fed(self) -> bool:
        """The latest values from what the Metrics tab's read of every metric of a run brought
        (``MetricsTab.fed``): that run's latest values need no read of their own this tick. True when
        a value changed."""
        changed = False
        for rs in self.runs:
            got = self.metrics.fed.get(rs.id)
            if got is None:
                continue
            rs.take_points(got)
            latest = self.latest.setdefault(rs.id, {})
            for key, (step, value, _) in got.items():
                # step-ordered, the later-written last among equal steps: what ``Run.latest`` would say
                if len(step) and (key not in latest or int(step[-1]) >= latest[key][0]):
                    latest[key] = (int(step[-1]), float(value[-1]))
                    changed = True
            self._latest_at[rs.id] = rs.last_step
            if "epoch" in latest:
                rs.epoch = latest["epoch"][1]
        return changed

    def _sync_latest(self) -> bool:
        """The latest values of the series the charts just read, where newer than the last read of every
        metric (the table used to wait for the slow read, every SLOW_INTERVAL, and lagged the header). A
        flush that landed between the run row's read and the points' read moves the header's step with
        it, so the header never says an older step than the table. True when a value changed."""
        changed = False
        for (run_id, key), s in self.metrics.series.items():
            if s.last_step is None or s.last_value is None:
                continue
            latest = self.latest.setdefault(run_id, {})
            old = latest.get(key)
            if old is None or s.last_step > old[0]:
                latest[key] = (s.last_step, s.last_value)
                changed = True
        for rs in self.runs:
            top = max((v[0] for v in self.latest.get(rs.id, {}).values()), default=None)
            if top is not None and rs.last_step is not None and top > rs.last_step:
                rs.info["last_step"] = top
        return changed

    def show_step(self, step: int, run_id: str | None = None) -> tuple[float, float] | None:
        """Show the Metrics tab zoomed around ``step`` of run ``run_id`` (default: the primary run): what
        an alert's "show step N" button does. Returns the x range shown (None: nothing drawn to place it)."""
        with self.lock:
            rs = next((r for r in self.runs if r.id == run_id), None) if run_id else None
            rs = rs or (self.runs[0] if self.runs else None)
            if rs is None:
                return None
            shown = self.metrics.zoom.focus(rs, int(step))
        self.select("Metrics")
        self.refresh()
        return shown

    def _update_busy(self) -> None:
        try:
            in_cell = self._busy_probe()
        except Exception:
            in_cell = False
        now = time.monotonic()
        if not in_cell:
            self._busy_since = None
            self.busy = False
            return
        if self._busy_since is None:
            self._busy_since = now
        self.busy = now - self._busy_since >= BUSY_AFTER

    def refresh_tab(self, tab) -> None:
        with self.lock:
            if self.runs:
                tab.refresh()

    def _on_tab(self, change) -> None:
        idx = change["new"]
        if idx is None:
            return
        tab = self._tabs[idx]
        self._fill_slots()
        try:
            with self.lock:
                if not self.runs:
                    return
                if tab is self.hardware:
                    self.hardware.read()
                    self.hardware.render()
                elif tab is self.metrics:
                    self.metrics.refresh(True)
                else:
                    tab.refresh()
                self.header.render()  # what the tab read may have raised an alert
        except Exception as exc:
            self.footer.value = f.note(f"{TAB_TITLES[idx]}: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")

    def _fill_slots(self) -> None:
        """The shown tab's widgets in its slot, the others empty; every tab filled while the kernel is
        busy: it does not hear tab clicks then, and an empty tab would stay empty until the cell ends."""
        idx = self.tabs.selected_index or 0
        for i, slot in enumerate(self._slots):
            want = (self._tabs[i].widget,) if self.busy or i == idx else ()
            if slot.children != want:
                slot.children = want

    def select(self, title: str) -> None:
        """Show the tab called ``title`` (``"Metrics"``, ``"Hardware"``, ``"Checkpoints"``...)."""
        self.tabs.selected_index = TAB_TITLES.index(title)

    # ------------------------------------------------------------------ the refresh thread
    def _ended(self) -> bool:
        """Every run shown has ended and no request of the controls waits for an answer."""
        ended = bool(self.runs) and all(rs.final for rs in self.runs) and not self.control.pending
        return self.group.ended(ended) if self.group is not None else ended

    def _last_refresh(self) -> None:
        """Everything read once more after the run ended: the slow parts (epoch, latest values, events)
        are otherwise read every SLOW_INTERVAL, and the thread stops before the next one is due."""
        self._everything = True
        try:
            self.refresh(slow=True)
        except Exception:
            pass  # the footer says so; the view stays as the last good refresh left it
        finally:
            self._everything = False

    @property
    def live(self) -> bool:
        """True while the refresh thread runs."""
        return self._refresher.alive

    def stop_refresh(self) -> None:
        if not hasattr(
            self, "_refresher"
        ):  # __init__ failed early (ipywidgets closes widgets when collected)
            return
        self._refresher.stop()

    def close(self) -> None:
        self.stop_refresh()
        super().close()
        if getattr(self, "_own_store", False):
            self.store.close()

    # ------------------------------------------------------------------ export
    def export_csv(self, path=None) -> str:
        """Write every point of the visible series (long format) to ``path`` (default: a new file here)."""
        with self.lock:
            return self.metrics.export_csv(path)

    def _repr_mimebundle_(self, **kwargs):
        """The widget, plus a static snapshot (header and charts as HTML) that front ends without
        ipywidgets show instead of a bare ``Monitor(...)`` line: nbconvert, GitHub's viewer."""
        bundle = super()._repr_mimebundle_(**kwargs)
        try:
            from .snapshot import snapshot_html

            bundle["text/html"] = snapshot_html(self)
        except Exception:  # a picture that cannot be drawn never stops the widget from showing
            pass
        return bundle

    def __repr__(self) -> str:
        runs = ", ".join(f"{rs.name} ({rs.status})" for rs in self.runs) or self.waiting_for
        return f"Monitor({runs})"
