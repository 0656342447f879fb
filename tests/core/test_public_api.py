"""The public API as documented: `tmon_core.__all__` is sorted, complete and what the README shows;
the docstring examples of the public modules run as written (doctests)."""

from __future__ import annotations

import doctest
import importlib
import re
from pathlib import Path

import pytest

import tmon_core

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")


def test_all_is_sorted_and_importable():
    assert tmon_core.__all__ == sorted(tmon_core.__all__), "keep tmon_core.__all__ sorted"
    missing = [n for n in tmon_core.__all__ if not hasattr(tmon_core, n)]
    assert not missing, f"tmon_core.__all__ names what it does not define: {missing}"


def test_all_matches_the_readme():
    undocumented = [n for n in tmon_core.__all__ if not re.search(rf"`[^`]*\b{re.escape(n)}\b", README)]
    assert not undocumented, f"public names the README does not show: {undocumented}"
    used = set(re.findall(r"\btmon_core\.([A-Za-z_]\w*)", README))
    for names in re.findall(r"from tmon_core import ([\w, ]+)", README):
        used |= {n.strip() for n in names.split(",") if n.strip()}
    subpackages = {p.name for p in (ROOT / "tmon_core").iterdir() if (p / "__init__.py").exists()}
    not_public = sorted(used - set(tmon_core.__all__) - subpackages - {"__all__"})
    assert not not_public, f"the README uses tmon_core names that are not in __all__: {not_public}"


# the modules whose docstrings show the public API; each must hold runnable examples
DOCTESTED = [
    "tmon_core",
    "tmon_core.alerts.engine",
    "tmon_core.analysis.detect",
    "tmon_core.checkpoints",
    "tmon_core.diff",
    "tmon_core.guard",
    "tmon_core.run_groups",
]


@pytest.mark.parametrize("name", DOCTESTED)
def test_docstring_examples_run(name, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an example that writes ./tmon.db writes it here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0, f"{name} has no runnable examples left"
    assert result.failed == 0, f"{result.failed} of {result.attempted} examples of {name} failed (see above)"
