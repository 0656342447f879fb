import os
import warnings

import pytest

# Lightning's chatter (no GPU, num_workers advice) is not what these tests look at
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/tmon.db"


@pytest.fixture(autouse=True)
def _isolated_default_store(tmp_path, monkeypatch):
    """No test writes ./tmon.db of the checkout: the default store points into the test's tmp dir."""
    monkeypatch.setenv("TMON_STORE", f"sqlite:///{tmp_path}/default.db")
    monkeypatch.chdir(tmp_path)
