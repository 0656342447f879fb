"""Hostile and bad input: metric keys and values, hand-written control rows, random payloads."""

import json
import math
import sqlite3
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tmon_core import Recorder, open_store
from tmon_core.control import Controller, Param, SetParams

SQLISH = "x'); DROP TABLE tmon_runs; --"


def test_odd_but_valid_keys_are_stored_verbatim(store_url):
    keys = ["λ/损失", SQLISH, "a" * 250, "val/acc@top-5", "emoji 🚀", '"quoted"']
    rec = Recorder(store_url, flush_interval=0.05)
    rec.log({k: float(i) for i, k in enumerate(keys)}, step=0)
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert sorted(run.metric_keys()) == sorted(keys)
    assert {k: run.metrics(k).value[0] for k in keys} == {k: float(i) for i, k in enumerate(keys)}
    assert len(open_store(store_url).runs()) == 1  # the table is still there


@pytest.mark.parametrize(
    "value, error",
    [
        (None, "received NoneType"),
        ("1.0", "received str"),
        ([1.0], "received list"),
        ({"a": 1}, "received dict"),
        (object(), "received object"),
        (b"1", "received bytes"),
    ],
)
def test_non_numeric_values_are_clear_errors(store_url, value, error):
    rec = Recorder(store_url, flush_interval=0.05)
    with pytest.raises(TypeError, match=error):
        rec.log({"x": value}, step=0)
    rec.log({"x": True, "y": 3}, step=1)  # bool and int are numbers
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.metrics("x").value.tolist() == [1.0] and run.metrics("y").value.tolist() == [3.0]


def test_multi_element_tensor_is_a_clear_error(store_url):
    torch = pytest.importorskip("torch")
    rec = Recorder(store_url, flush_interval=0.05)
    with pytest.raises(
        TypeError, match=r"'x': a tensor value must hold one element, received a tensor of shape \(2, 2\)"
    ):
        rec.log({"x": torch.ones(2, 2)}, step=0)
    rec.log({"x": torch.ones(1, 1)}, step=0)  # one element in any shape is a scalar
    rec.close()
    assert open_store(store_url).run(rec.run_id).metrics("x").value.tolist() == [1.0]


def _refused():
    import numpy as np

    torch = pytest.importorskip("torch")
    return [
        (
            np.array([1.0, 2.0, 3.0]),
            r"'v': a numpy array value must hold one element, received an array of shape \(3,\)",
        ),
        (
            torch.tensor([1.0, 2.0, 3.0]),
            r"'v': a tensor value must hold one element, received a tensor of shape \(3,\)",
        ),
        (np.array([], dtype=np.float32), r"'v': a numpy array value must hold one element"),
        (np.complex128(1 + 2j), r"'v': value must be a real number, received complex128"),
        (np.array([1 + 2j]), r"'v': a numpy array value must hold a real number, received dtype complex128"),
        (torch.tensor(1 + 2j), r"'v': a tensor value must be real, received a torch.complex64 tensor"),
        (1 + 2j, r"'v': value must be a real number, received complex"),
        (torch.ones(1, device="meta"), r"'v': a meta tensor has no value to record"),
        (np.array(["1.0"]), r"'v': a numpy array value must hold a real number, received dtype <U3"),
    ]


def test_one_rule_for_values_at_log_the_same_for_numpy_and_torch(store_url):
    """Accepted and stored as its value: a number, a 0-d or one-element array or tensor. Refused at
    log() with the key and the type: more than one element, complex, a meta tensor."""
    import numpy as np

    torch = pytest.importorskip("torch")
    rec = Recorder(store_url, flush_interval=0.05)
    accepted = {
        "np0d": np.array(2.5),
        "np1": np.array([4.0]),
        "np11": np.array([[5]], dtype=np.int32),
        "t0d": torch.tensor(2.5),
        "t1": torch.ones(1),
        "t11": torch.full((1, 1), 5, dtype=torch.int32),
        "npf": np.float32(0.5),
        "bf16": torch.tensor([1.5], dtype=torch.bfloat16),
    }
    rec.log(accepted, step=0)
    rec.log(accepted, step=1)  # the same pattern again: the block's path
    for value, error in _refused():
        with pytest.raises(TypeError, match=error):
            rec.log({"v": value}, step=2)
        with pytest.raises(TypeError, match=error):  # also in a key set seen before with a real value
            rec.log({"np0d": np.array(1.0), "v": value}, step=2)
    rec.log({"np0d": np.array(1.0), "v": 1.0}, step=2)
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    expected = {
        "np0d": 2.5,
        "np1": 4.0,
        "np11": 5.0,
        "t0d": 2.5,
        "t1": 1.0,
        "t11": 5.0,
        "npf": 0.5,
        "bf16": 1.5,
    }
    for key, value in expected.items():
        assert run.metrics(key).value.tolist()[:2] == [value, value], key
    assert run.metrics("v").step.tolist() == [2]  # nothing refused reached the store
    assert not rec.problems


def test_a_refused_shape_under_a_pattern_seen_before_is_refused_at_once(store_url):
    import numpy as np

    torch = pytest.importorskip("torch")
    rec = Recorder(store_url, flush_interval=0.05)
    rec.log({"a": np.array([1.0]), "t": torch.ones(1)}, step=0)
    with pytest.raises(
        TypeError, match=r"'a': a numpy array value must hold one element, received an array of shape \(2,\)"
    ):
        rec.log({"a": np.array([1.0, 2.0]), "t": torch.ones(1)}, step=1)
    with pytest.raises(
        TypeError, match=r"'t': a tensor value must hold one element, received a tensor of shape \(2,\)"
    ):
        rec.log({"a": np.array([1.0]), "t": torch.ones(2)}, step=1)
    with pytest.raises(
        TypeError, match=r"'a': a numpy array value must hold a real number, received dtype complex128"
    ):
        rec.log({"a": np.array([1j]), "t": torch.ones(1)}, step=1)
    rec.log({"a": np.array([3.0]), "t": torch.ones(1) * 2}, step=1)
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.metrics("a").value.tolist() == [1.0, 3.0] and run.metrics("t").value.tolist() == [1.0, 2.0]


def _controller(store_url, **kw):
    rec = Recorder(store_url, flush_interval=0.05)
    knob = {"v": 0.5}
    ctl = Controller(
        rec,
        control="admin",
        params={"knob": Param(get=lambda: knob["v"], set=lambda v: None, bounds=(0.0, 1.0))},
        **kw,
    )
    rec.on_requests(ctl.offer)
    return rec, ctl


def test_a_hand_written_request_with_garbage_json_is_rejected_with_a_reason(store_url, tmp_path):
    rec, ctl = _controller(store_url)
    assert rec.flush()
    con = sqlite3.connect(tmp_path / "tmon.db")
    for payload in ("{not json", "[1, 2]", '"lr"'):
        con.execute(
            "INSERT INTO tmon_requests (run_id, kind, payload, status, requested_at) VALUES (?, ?, ?, ?, ?)",
            (rec.run_id, "set_param", payload, "pending", time.time()),
        )
    con.execute(
        "INSERT INTO tmon_requests (run_id, kind, payload, status, requested_at) VALUES (?, ?, ?, ?, ?)",
        (rec.run_id, "launch_missiles", "{}", "pending", time.time()),
    )
    con.execute(
        "INSERT INTO tmon_requests (run_id, kind, payload, status, requested_at) VALUES (?, ?, ?, ?, ?)",
        (rec.run_id, "set_param", json.dumps({"values": {"lr": 0.1}}), "pending", time.time()),
    )
    con.commit()
    assert rec.flush()
    decisions = ctl.due(0)
    assert [type(d).__name__ for d in decisions] == ["SetParams"]  # only the valid one became a decision
    ctl.resolve(decisions[0], 0, applied=True, old={"lr": 0.2}, new={"lr": 0.1})
    rec.close()
    reqs = open_store(store_url).run(rec.run_id).requests()
    assert reqs.status.tolist() == ["rejected"] * 4 + ["applied"]
    assert reqs.reason[0].startswith("payload is not a valid JSON object")
    assert "JSON object is needed, received list" in reqs.reason[1]
    assert "unknown request kind 'launch_missiles'" in reqs.reason[3]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    kind=st.sampled_from(["set_param", "preset", "checkpoint", "rollback", "stop", "x"]),
    payload=st.dictionaries(
        st.sampled_from(
            ["values", "group", "mode", "name", "tags", "description", "checkpoint", "source", "compatible"]
        ),
        json_values,
        max_size=5,
    ),
)
def test_any_payload_becomes_a_decision_or_a_rejection_never_an_exception(store_url, kind, payload):
    rec, ctl = _controller(store_url, presets={"p": {"lr": 0.1}})
    try:
        ctl.offer([{"id": 1, "kind": kind, "payload": payload, "requested_by": "fuzz"}])
        decisions = ctl.due(0)
        for d in decisions:
            if isinstance(d, SetParams):
                for c in d.changes:  # whatever got through is a known parameter with a checked value
                    assert c.name in ("lr", "weight_decay", "momentum", "betas", "eps", "knob")
                    if c.name != "betas":
                        assert isinstance(c.value, float) and math.isfinite(c.value)
    finally:
        rec.close()


finite_or_not = (
    st.floats(allow_nan=True, allow_infinity=True)
    | st.integers(-(2**53), 2**53)
    | st.booleans()
    | st.sampled_from([10**400, -(10**400), 2**64])
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(metrics=st.dictionaries(st.text(max_size=300), finite_or_not, min_size=1, max_size=4))
def test_any_metric_dict_is_stored_exactly_or_refused_clearly(store_url, metrics):
    rec = Recorder(store_url, flush_interval=0.05)
    try:
        rec.log(metrics, step=0)
    except ValueError as exc:
        assert "metric key" in str(exc)
        rec.close()
        return
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    for key, value in metrics.items():
        got = run.metrics(key).value.tolist()
        assert len(got) == 1
        try:
            expected = float(value)
        except OverflowError:  # an int beyond float range is stored as the nearest float, ±inf
            expected = math.inf if value > 0 else -math.inf
        assert (math.isnan(got[0]) and math.isnan(expected)) or got[0] == expected


def test_a_complex_or_meta_tensor_under_a_real_pattern_is_nan_and_said_never_its_real_part(store_url):
    """Per call, log() checks only a tensor's element count (dtype and device are checked when a key
    set's pattern of types is new: the usual call stays as cheap as it was). A complex or meta tensor
    that arrives later under the same pattern is stored as NaN and named, never as its real part."""
    torch = pytest.importorskip("torch")
    rec = Recorder(store_url, flush_interval=0.05)
    rec.log({"t": torch.tensor(1.0)}, step=0)
    with pytest.warns(Warning, match="1 value\\(s\\) of metric 't' could not be converted"):
        rec.log({"t": torch.tensor(2 + 3j)}, step=1)
        rec.log({"t": torch.tensor(4.0)}, step=2)
        assert rec.flush()
    rec.close()
    values = open_store(store_url).run(rec.run_id).metrics("t").value.tolist()
    assert values[0] == 1.0 and math.isnan(values[1]) and values[2] == 4.0
