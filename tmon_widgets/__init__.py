"""tmon_widgets: the Jupyter views of tmon (ipywidgets + bqplot). The Monitor widget comes with
the notebook issue; this package is importable without ipywidgets until then."""

__all__: list[str] = []
