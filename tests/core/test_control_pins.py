"""A pin holds a parameter until the user says something else about it."""

from __future__ import annotations

from tmon_core.control import Controller


def _request(rid: int, values: dict, mode: str | None = None, group: int | None = None) -> dict:
    payload: dict = {"values": values}
    if mode:
        payload["mode"] = mode
    if group is not None:
        payload["group"] = group
    return {"id": rid, "kind": "set_param", "payload": payload}


def _lr_changes(decisions) -> list[tuple[str, float]]:
    return [(d.source, c.value) for d in decisions for c in d.changes if c.name == "lr"]


def test_a_later_change_of_a_pinned_parameter_replaces_the_pin():
    ctl = Controller()
    ctl.offer([_request(1, {"lr": 0.05}, "pin"), _request(2, {"momentum": 0.8}, "pin")])
    assert _lr_changes(ctl.due(0)) == [("api", 0.05)]
    assert _lr_changes(ctl.due(1)) == [("pin", 0.05)], "held against the scheduler"
    ctl.offer([_request(3, {"lr": 0.02})])  # a plain (scale) change of lr
    assert _lr_changes(ctl.due(2)) == [("pin", 0.05), ("api", 0.02)]
    assert _lr_changes(ctl.due(3)) == [], "the pin is gone: the new value is not overwritten"
    assert list(ctl.pins) == [("momentum", None)], "another parameter's pin stays"


def test_a_new_pin_replaces_the_old_and_a_group_change_releases_the_global_pin():
    ctl = Controller()
    ctl.offer([_request(1, {"lr": 0.05}, "pin")])
    ctl.due(0)
    ctl.offer([_request(2, {"lr": 0.01}, "pin")])
    ctl.due(1)
    assert _lr_changes(ctl.due(2)) == [("pin", 0.01)]
    ctl.offer([_request(3, {"lr": 0.3}, "set", group=1)])
    ctl.due(3)
    assert ctl.pins == {}
