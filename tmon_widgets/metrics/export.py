"""Export of the Metrics tab: every point of the visible series (not only the downsampled ones the
charts hold), as a CSV file written from code or as a download link from the ``export CSV`` button.
"""

from __future__ import annotations

import base64
import os
import time

import ipywidgets as widgets

from .. import _format as f


class Export:
    """The ``export CSV`` button (``button``) and what it says (``out``)."""

    def __init__(self, tab):
        self.tab = tab
        self.button = widgets.Button(
            description="export CSV",
            icon="download",
            layout=widgets.Layout(width="110px"),
            tooltip="the visible series, every point: a CSV to download",
        )
        self.out = widgets.HTML()
        self.button.on_click(lambda _b: self._clicked())

    def frame(self):
        """Every point of the visible series (selected metrics, timeframe or zoom range), long format."""
        import pandas as pd

        frames = []
        for (run_id, key), s in self.tab.series.items():
            rs = next(r for r in self.tab.mon.runs if r.id == run_id)
            start, end = s.start, s.end
            if s.window is not None and s.last_step is not None:
                start = s.last_step - s.window + 1
            df = rs.run.metrics(key, start=start, end=end)
            df.insert(0, "key", key)
            df.insert(0, "run_name", rs.name)
            df.insert(0, "run_id", run_id)
            frames.append(df)
        cols = ["run_id", "run_name", "key", "step", "value", "wall_time"]
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=cols)

    def _name(self) -> str:
        runs = self.tab.mon.runs
        rid = runs[0].id[:8] if runs else "none"
        return f"tmon-{rid}-metrics-{time.strftime('%Y%m%d-%H%M%S')}.csv"

    def write(self, path: str | os.PathLike | None = None) -> str:
        """Write the visible series to ``path`` (default: a new file in the working directory)."""
        df = self.frame()
        if path is None:
            path = self._name()
        path = os.path.abspath(os.fspath(path))
        df.to_csv(path, index=False)
        self.out.value = f.note(
            f"wrote <code>{f.esc(path)}</code>: {len(df):,} points of "
            f"{df.key.nunique() if len(df) else 0} series",
            "ok",
        )
        return path

    def link(self) -> str:
        """The visible series as a CSV download link (a data URL): the button's file lands where the
        person clicking is, not on the kernel's machine."""
        df = self.frame()
        name = self._name()
        data = base64.b64encode(df.to_csv(index=False).encode()).decode("ascii")
        n = df.key.nunique() if len(df) else 0
        self.out.value = f.note(
            f'<a download="{f.esc(name)}" href="data:text/csv;base64,{data}" style="font-weight:600">'
            f"⬇ download {f.esc(name)}</a>: {len(df):,} points of {n} series",
            "ok",
        )
        return name

    def _clicked(self) -> None:
        try:
            with self.tab.mon.lock:
                self.link()
        except Exception as exc:
            self.out.value = f.note(f"export failed: {f.esc(f'{type(exc).__name__}: {exc}')}", "error")
