"""Groups on the store: given by the option or $TMON_GROUP, checked, stored on the run (schema 6),
read back by ``runs(group=...)``, ``Run.group`` and ``groups()``; a real schema 5 store (SQLite
file and PostgreSQL dump, written by tmon at schema 5) is upgraded when opened."""

import doctest
import os
import shutil

import pytest
from sqlalchemy import create_engine, text

import tmon_core
from tests.callbacks.adapters import harness_params
from tmon_core import Recorder, open_store
from tmon_core.store.schema import SCHEMA_VERSION

DATA = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data")
ODD = "扫描 sweep-3 ß → 🚀"  # any Unicode that is one line is a fine group name


def record(url, **kw):
    rec = Recorder(url, flush_interval=0.05, **kw)
    rec.log({"loss": 1.0}, 0)
    rec.close()
    assert not rec.problems, rec.problems
    return rec


def test_the_group_is_stored_on_the_run_and_filters_runs(store_url):
    a = record(store_url, group="sweep-3", run_name="a")
    b = record(store_url, group="sweep-3", run_name="b")
    record(store_url, group=ODD, run_name="odd")
    record(store_url, run_name="alone")
    store = open_store(store_url)
    assert store.run(a.run_id).group == "sweep-3" and store.run("odd").group == ODD
    assert store.run("alone").group is None and store.run("alone").info()["group"] is None
    # by id: a one-letter name such as "b" is also the prefix of any run id starting with b
    assert store.run(b.run_id).info()["group"] == "sweep-3" and "group_name" not in store.run(b.run_id).info()
    assert set(tmon_core.runs(store_url, group="sweep-3").id) == {a.run_id, b.run_id}
    assert tmon_core.runs(store_url, group=ODD).name.tolist() == ["odd"]
    assert tmon_core.runs(store_url, group="nope").empty
    everything = tmon_core.runs(store_url).set_index("name").group
    assert everything.drop("alone").to_dict() == {"a": "sweep-3", "b": "sweep-3", "odd": ODD}
    assert everything.isna().to_dict() == {"a": False, "b": False, "odd": False, "alone": True}
    with pytest.raises(ValueError, match="group must be a group's name .*received group=3"):
        tmon_core.runs(store_url, group=3)
    store.close()


def test_tmon_group_gives_the_group_and_the_option_wins(store_url, monkeypatch):
    monkeypatch.setenv("TMON_GROUP", "from-env")
    env = record(store_url, run_name="env")
    opt = record(store_url, run_name="opt", group="from-option")
    monkeypatch.setenv("TMON_GROUP", "")  # set but empty: no group
    none = record(store_url, run_name="none")
    store = open_store(store_url)
    assert [store.run(r.run_id).group for r in (env, opt, none)] == ["from-env", "from-option", None]
    store.close()


@pytest.mark.parametrize(
    "bad, match",
    [
        (3, r"group must be a string \(the name of a sweep or experiment\), received group=3 \(int\)"),
        (["a"], r"group must be a string .*received group=\['a'\] \(list\)"),
        ("", r"group must name a group \(a non-empty string\), received group=''"),
        ("   ", r"group must name a group .*received group='   '"),
        (
            "a\nb",
            r"group must be one line of text without control characters: group='a\\nb' has '\\n' at position 1",
        ),
        ("tab\tx", r"without control characters.*'\\t' at position 3"),
        ("nul\x00", r"group must be text the store can keep .* contains NUL"),
        ("bad\udcff", r"contains a lone surrogate"),
        ("x" * 251, r"is 251 characters long; at most 250 are stored"),
        (" padded", r"group must not begin or end with whitespace"),
    ],
)
def test_a_bad_group_is_a_clear_error_naming_it(store_url, bad, match):
    with pytest.raises(ValueError, match=match):
        Recorder(store_url, group=bad)
    assert tmon_core.runs(store_url).empty  # refused before any run was made


def test_a_bad_tmon_group_is_an_error_naming_the_variable(store_url, monkeypatch):
    monkeypatch.setenv("TMON_GROUP", "two\nlines")
    with pytest.raises(ValueError, match=r"TMON_GROUP must be one line of text .*TMON_GROUP='two\\nlines'"):
        Recorder(store_url)


def test_a_group_of_250_characters_is_kept_whole(store_url):
    name = "é" * 250
    rec = record(store_url, group=name)
    assert open_store(store_url).run(rec.run_id).group == name


def test_a_recorder_attached_to_a_run_leaves_its_group_alone(store_url, monkeypatch):
    first = record(store_url, group="sweep-3")
    monkeypatch.setenv("TMON_GROUP", "other")
    more = Recorder.attach(store_url, first.run_id, flush_interval=0.05)
    more.log({"test_loss": 0.5}, 1)
    more.close(None)
    assert open_store(store_url).run(first.run_id).group == "sweep-3"


def test_groups_lists_each_group_with_its_counts_newest_activity_first(store_url):
    record(store_url, group="old")
    for status in ("completed", "failed"):
        rec = Recorder(store_url, group="new", flush_interval=0.05)
        rec.log({"loss": 1.0}, 0)
        rec.log({"loss": 0.5}, 1)
        rec.close(status)
    record(store_url)  # in no group: not listed
    g = tmon_core.groups(store_url)
    assert g.group.tolist() == ["new", "old"]
    new = g.iloc[0]
    assert (new.runs, new.running, new.completed, new.failed, new.steps) == (2, 0, 1, 1, 4)
    assert new.last_activity >= g.iloc[1].last_activity and new.first_start <= new.last_activity


def test_groups_of_a_store_without_groups_is_empty(store_url):
    record(store_url)
    assert tmon_core.groups(store_url).empty
    assert list(tmon_core.groups(store_url).columns)[:2] == ["group", "runs"]


def test_the_run_groups_module_examples_run(tmp_path, monkeypatch):
    from tmon_core import run_groups

    monkeypatch.chdir(tmp_path)
    result = doctest.testmod(run_groups, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------------------- every framework
@pytest.fixture(params=harness_params())
def adapter(request):
    return request.param()


@pytest.mark.slow
def test_every_callback_records_its_group_option_and_tmon_group(adapter, tmp_path, store_url, monkeypatch):
    adapter.run(tmp_path, adapter.callback(store_url, group="sweep-3", report="off", sample_interval=None))
    monkeypatch.setenv("TMON_GROUP", "from-env")
    adapter.run(tmp_path, adapter.callback(store_url, report="off", sample_interval=None))
    runs = tmon_core.runs(store_url)
    assert runs.group.tolist() == ["from-env", "sweep-3"] and (runs.status == "completed").all()


def test_every_callback_refuses_a_bad_group_at_construction(adapter, store_url, monkeypatch):
    with pytest.raises(ValueError, match="group must be one line of text"):
        adapter.callback(store_url, group="a\rb")
    monkeypatch.setenv("TMON_GROUP", " x")
    with pytest.raises(ValueError, match="TMON_GROUP must not begin or end with whitespace"):
        adapter.callback(store_url)


# ---------------------------------------------------------------------------- schema 5 -> 6
def _check_v5_upgraded(url):
    store = open_store(url)
    old = store.run("from-v5")
    info = old.info()
    assert info["group"] is None and info["tags"] == ["old"] and info["notes"] == "written by schema 5"
    assert info["config"] == {"hparams": {"lr": 0.01, "optimizer": "adam"}} and info["status"] == "completed"
    loss = old.metrics("loss")
    assert loss.step.tolist() == list(range(20)) and loss.value.isna().tolist() == [s == 7 for s in range(20)]
    assert old.events().type.tolist()[-1] == "train_end"
    with store.engine.connect() as conn:
        versions = conn.execute(text("SELECT version FROM tmon_schema ORDER BY id")).scalars().all()
    assert versions[-2:] == [5, 6] and SCHEMA_VERSION == 6
    new = record(url, group="sweep-3", run_name="after")
    assert store.run(new.run_id).group == "sweep-3"
    assert tmon_core.runs(url, group="sweep-3").name.tolist() == ["after"]
    assert tmon_core.groups(url).group.tolist() == ["sweep-3"]
    store.close()


def test_a_real_schema_5_sqlite_store_is_upgraded_on_open(tmp_path):
    path = tmp_path / "v5.db"
    shutil.copy(os.path.join(DATA, "store_v5.db"), path)
    _check_v5_upgraded(f"sqlite:///{path}")


def test_a_real_schema_5_postgres_store_is_upgraded_on_open(pg_url):
    dump = open(os.path.join(DATA, "store_v5_postgresql.sql"), encoding="utf-8").read()
    engine = create_engine(pg_url)
    with engine.begin() as conn:
        # pg_dump's statements as psql would run them: several in one string, no parameters
        conn.connection.dbapi_connection.cursor().execute(dump)
    engine.dispose()
    _check_v5_upgraded(pg_url)
    store = open_store(pg_url)
    rec = record(pg_url, group=ODD)
    assert store.run(rec.run_id).group == ODD and tmon_core.runs(pg_url, group=ODD).id.tolist() == [
        rec.run_id
    ]
    store.close()
