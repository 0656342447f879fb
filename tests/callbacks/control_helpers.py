"""Helpers shared by the control tests of the three frameworks."""

from __future__ import annotations

import textwrap
import time

from tmon_core import open_store


def handed_over(cb, timeout: float = 10.0) -> None:
    """Block the training thread until tmon's writer has handed every pending request of the run
    to the controller, so they all apply at the very next step (tests that are not about latency
    stay deterministic, also when a burst of requests spans two polls on a loaded machine)."""
    rec = cb.session.recorder
    with open_store(rec.url) as store:
        pending = int((store.run(cb.run_id).requests().status == "pending").sum())
    deadline = time.time() + timeout
    while len(cb._ctl._incoming) < pending and time.time() < deadline:
        time.sleep(0.01)


def request_arrived(url: str, run_id: str, timeout: float = 60.0) -> None:
    """Block the training thread until the run has a control request. A second process's start-up
    (its imports) can outlast a tiny fit on a loaded machine; waiting for its request keeps such a
    test about what tmon does with the request, not about a race with the interpreter's start."""
    deadline = time.time() + timeout
    with open_store(url) as store:
        while store.run(run_id).requests().empty and time.time() < deadline:
            time.sleep(0.02)


#: a second process asking a running run for lr=0.02 and printing "<request id> <outcome>"
LIVE = textwrap.dedent("""
    import sys
    from tmon_core import open_store
    url, run_id = sys.argv[1], sys.argv[2]
    req = open_store(url).run(run_id).set_param("lr", 0.02, requested_by="second-process")
    print(req.id, req.wait(timeout=30), flush=True)
""")
