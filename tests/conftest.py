import os
import warnings

import pytest

# Lightning's chatter (no GPU, num_workers advice) is not what these tests look at
warnings.filterwarnings("ignore", message=".*does not have many workers.*")
warnings.filterwarnings("ignore", message=".*GPU available but not used.*")
os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning")
# Keras runs on the torch backend in these tests (tensorflow is not installed); set before any import
os.environ.setdefault("KERAS_BACKEND", "torch")


try:  # tiny models on a 2-core machine: one torch thread is ~10x faster than two fighting
    import torch

    torch.set_num_threads(1)
except ImportError:
    pass


#: what `make test` installs; in CI a missing one must fail the run, not skip its tests quietly
CI_MODULES = (
    "lightning",
    "pytorch_lightning",
    "transformers",
    "accelerate",
    "keras",
    "safetensors",
    "h5py",
    "ipywidgets",
    "bqplot",
    "psycopg",
    "pyarrow",
    "hypothesis",
    "jsonargparse",
    "tensorflow",
    "jax",
    "ray",
    "notebook",
    "apprise",
    "prometheus_client",
    "tensorboard",
)


def pytest_sessionstart(session):
    if os.environ.get("CI") != "true":
        return
    import importlib.util

    missing = [m for m in CI_MODULES if importlib.util.find_spec(m) is None]
    if missing:
        raise pytest.UsageError(
            f"CI must run every test, but these packages are not installed: {', '.join(missing)} "
            f"(make test installs them through pyproject's extras)"
        )


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module's tiny models: two threads on a shared two-core machine
    make each tiny step ~10x slower (a framework's import may have changed the count set above)."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def store_url(tmp_path):
    return f"sqlite:///{tmp_path}/tmon.db"


@pytest.fixture(autouse=True)
def _isolated_default_store(tmp_path, monkeypatch):
    """No test writes ./tmon.db of the checkout: the default store points into the test's tmp dir."""
    monkeypatch.setenv("TMON_STORE", f"sqlite:///{tmp_path}/default.db")
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="session")
def pg_server():
    """A PostgreSQL server of the tests' own (see tests/pg.py)."""
    reason = None
    try:
        import psycopg  # noqa: F401

        from tests.pg import PgServer

        server = PgServer()
    except Exception as exc:  # no binaries, no driver, cannot start
        reason = f"no PostgreSQL server for the tests: {type(exc).__name__}: {exc}"
    if reason:
        if os.environ.get("CI") == "true":
            pytest.fail(reason + " (CI installs PostgreSQL: these tests must run there)")
        pytest.skip(reason)
    yield server
    server.destroy()


@pytest.fixture
def pg_url(pg_server):
    """A fresh database on the test server."""
    if os.environ.get("TMON_TEST_POSTGRES"):
        return os.environ["TMON_TEST_POSTGRES"]
    return pg_server.new_database()
