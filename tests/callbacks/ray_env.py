"""A real local Ray for the tests: one node (``ray.init``) or simulated nodes (``Cluster``).

Every Ray process (the raylet's agents, the Train controller, each worker) imports ``ray``, which
imports ``jsonschema``, which builds ``rfc3987-syntax``'s Earley grammar when that package is
installed (it comes with JupyterLab): 3.1 s of CPU per process measured here. On a two-core machine
the dashboard agent then misses the raylet's hard-coded wait for its port file and Ray does not
start ("The current node timed out during startup"; ray-project/ray#65983). The Ray processes of the
tests get a ``PYTHONPATH`` whose first entry holds a ``rfc3987_syntax`` that raises ImportError,
which jsonschema handles (it then skips only the "iri" format check): the agent's import went from
5.0 s to 1.1 s of CPU. The same ``PYTHONPATH`` carries the checkout, so the workers import
``tests.callbacks.ray_jobs``.

``RAY_ADDRESS`` set: the tests use that running cluster instead of starting one (development).
"""

from __future__ import annotations

import contextlib
import os
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


@contextlib.contextmanager
def ray_process_env(tmp_dir: str):
    """The environment the Ray processes started inside inherit (see the module docstring)."""
    stub = os.path.join(tmp_dir, "ray-pythonpath")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "rfc3987_syntax.py"), "w") as f:
        f.write('raise ImportError("rfc3987_syntax is left out of the tests\' Ray processes")\n')
    updates = {
        "PYTHONPATH": os.pathsep.join(p for p in (stub, REPO, os.environ.get("PYTHONPATH")) if p),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_TRAIN_V2_ENABLED": "1",
    }
    before = {k: os.environ.get(k) for k in updates}
    os.environ.update(updates)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def start(init, attempts: int = 3):
    """Call ``init()`` (starts Ray) until it works: on a busy machine an agent can still be late."""
    import ray

    for attempt in range(attempts):
        try:
            return init()
        except Exception:
            with contextlib.suppress(Exception):
                ray.shutdown()
            if attempt == attempts - 1:
                raise
            time.sleep(5)
    return None
