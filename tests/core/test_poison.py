"""A bad record costs only itself (issue 14): nothing a user logs, prints or asks for stops the
recording of the rest of the run, on SQLite and on PostgreSQL alike.

Each reproduction of the issue, in a real store: every good point of the run is stored, the run
ends ``completed``, text the databases cannot hold is stored readably (escaped, cut with a marker),
and a record the store still refuses is named in a ``record_refused`` event and a warning that
names the record, not the store.
"""

import logging
import os
import tempfile
import time
import warnings

import pytest
from sqlalchemy import text

from tmon_core import Recorder, TMonStoreWarning, open_store
from tmon_core import events as ev
from tmon_core.store import StoreVersionError
from tmon_core.store.engine import create_store_engine
from tmon_core.store.text import CUT_MARK

UNDECODABLE = os.fsdecode(b"sample_\xff.bin")  # a file name that is not UTF-8: 'sample_\udcff.bin'


@pytest.fixture(params=["sqlite", "postgresql"])
def db(request, store_url):
    return store_url if request.param == "sqlite" else request.getfixturevalue("pg_url")


def quiet_recorder(url, **kw):
    kw.setdefault("flush_interval", 0.05)
    return Recorder(url, **kw)


def execute(url: str, *statements: str) -> None:
    engine = create_store_engine(url, writer=True)
    try:
        with engine.begin() as conn:
            for s in statements:
                conn.execute(text(s))
    finally:
        engine.dispose()


# ---------------------------------------------------------------------------- text at the boundary
def test_text_the_databases_refuse_is_stored_readably_and_the_run_goes_on(db, tmp_path):
    rec = quiet_recorder(db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(50):
            rec.log({"loss": 1.0 / (s + 1)}, step=s)
            if s == 3:
                rec.log_record("WARNING", f"skipping {UNDECODABLE}", logger="user.data", step=s)
            if s == 5:
                rec.log_record("WARNING", "a NUL\x00inside", logger="user\x00data", step=s)
            if s == 7:
                rec.event("t" * 100, step=s, message="bad\ud800message")  # a type over 64 characters
            if s == 9:
                rec.checkpoint(tmp_path / os.fsdecode(b"ck_\xfe.pt"), step=s, monitor="m" * 300)
            if s == 11:
                rec.update_run(name="n" * 300)
                rec.event("note", step=s, message="nul\x00", data={"why": "bad\ud800\x00"})
        rec.close()
    assert not [w for w in caught if issubclass(w.category, TMonStoreWarning)], [
        str(w.message) for w in caught
    ]

    run = open_store(db).run(rec.run_id)
    assert run.status == ev.COMPLETED
    assert run.metrics("loss").step.tolist() == list(range(50))
    logs = run.logs()
    assert logs.message.tolist() == ["skipping sample_\\udcff.bin", "a NULinside"]
    assert logs.logger.tolist() == ["user.data", "userdata"]
    events = run.events()
    long_type = next(t for t in events.type if t.startswith("ttt"))
    assert len(long_type) == 64 and long_type.endswith(" chars]") and CUT_MARK in long_type
    assert events[events.type == long_type].message.iloc[0] == "bad\\ud800message"
    note = events[events.type == "note"].iloc[0]
    assert note.message == "nul" and note.data == {"why": "bad\ud800\x00"}  # JSON keeps them as escapes
    ck = run.checkpoints(include_deleted=True).iloc[0]
    assert (
        ck.path == str(tmp_path / "ck_\\udcfe.pt")
        and len(ck.monitor) == 250
        and ck.monitor.endswith(" chars]")
    )
    info = run.info()
    assert len(info["name"]) == 250 and info["name"].startswith("nnn") and CUT_MARK in info["name"]
    assert run.events(ev.RECORD_REFUSED).empty  # made storable, so nothing was refused


@pytest.mark.slow  # a real fit (and the framework's import)
def test_a_lightning_fit_logging_an_undecodable_file_name_is_recorded_whole(db, tmp_path):
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    TinyRegressor, SyntheticData = make("lightning.pytorch")

    class Skipping(TinyRegressor):
        def training_step(self, batch, batch_idx):
            logging.getLogger("user.data").warning("skipping %s", UNDECODABLE)
            return super().training_step(batch, batch_idx)

    cb = TMonCallback(db, flush_interval=0.05, sample_interval=None)  # default options otherwise
    Trainer(
        max_epochs=2,
        callbacks=[cb],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    ).fit(Skipping(), SyntheticData(n=64, batch_size=16))  # 3 batches per epoch
    run = open_store(db).run(cb.run_id)
    assert run.status == ev.COMPLETED
    assert run.metrics("loss").step.tolist() == list(range(6))
    assert run.metrics("train_loss_step").step.tolist() == list(range(6))
    user = run.logs().query("logger == 'user.data'")
    assert user.message.tolist() == ["skipping sample_\\udcff.bin"] * 6
    assert run.events(ev.RECORD_REFUSED).empty


def test_what_the_constructors_can_check_they_refuse_naming_the_option(store_url):
    from tmon_callbacks._options import make_options  # every adapter's constructor checks its options here

    for kwargs, name in (
        ({"run_name": "r" * 251}, "run_name"),
        ({"run_name": "a\x00b"}, "run_name"),
        ({"tags": ["ok", "bad\udcff"]}, "tags"),
        ({"notes": "x\x00"}, "notes"),
    ):
        with pytest.raises(ValueError, match=f"^{name} must be text the store can keep"):
            Recorder(store_url, **kwargs)
        with pytest.raises(ValueError, match=f"^{name} must be text the store can keep"):
            make_options(store_url, kwargs)
    rec = Recorder(store_url, run_name="r" * 250, flush_interval=0.05)  # the longest name the store keeps
    rec.log({"x": 1.0}, step=0)
    with pytest.raises(ValueError, match="lone surrogate"):
        rec.log({"bad\ud800key": 1.0}, step=1)  # a key is refused, never rewritten
    rec.log({"x": 2.0}, step=1)
    rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.status == ev.COMPLETED and run.metrics("x").value.tolist() == [1.0, 2.0]
    assert run.info()["name"] == "r" * 250


# ---------------------------------------------------------------------------- records refused
def poison_logs(url: str) -> None:
    """A database that refuses one log message (a trigger its owner added): what tmon cannot foresee."""
    if url.startswith("sqlite"):
        execute(
            url,
            "CREATE TRIGGER poison BEFORE INSERT ON tmon_logs WHEN NEW.message = 'poison' "
            "BEGIN SELECT RAISE(ABORT, 'poisoned record refused by the trigger'); END",
        )
    else:
        execute(
            url,
            "CREATE FUNCTION poison() RETURNS trigger AS $$ BEGIN IF NEW.message = 'poison' THEN "
            "RAISE EXCEPTION 'poisoned record refused by the trigger'; END IF; RETURN NEW; END $$ "
            "LANGUAGE plpgsql",
            "CREATE TRIGGER poison BEFORE INSERT ON tmon_logs FOR EACH ROW EXECUTE FUNCTION poison()",
        )


def test_a_record_the_database_refuses_costs_only_itself(db, tmp_path):
    Recorder(db).close()  # the schema, for the trigger
    poison_logs(db)
    rec = quiet_recorder(db)
    b, c = str(tmp_path / "b.ckpt"), str(tmp_path / "c.ckpt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for s in range(200):
            rec.log({"loss": float(s), "acc": s / 200}, step=s)
            if s == 120:  # in the batch written record by record: their order still holds
                for op, path in (
                    ("save", b),
                    ("remove", b),
                    ("save", b),
                    ("save", c),
                    ("save", c),
                    ("remove", c),
                ):
                    rec.checkpoint(path, step=s) if op == "save" else rec.checkpoint_removed(path)
            rec.log_record("WARNING", "poison" if s == 120 else f"line {s}", logger="user", step=s)
            if s % 50 == 0:
                rec.event("marker", step=s, message=f"at {s}")
            if s % 40 == 0:
                time.sleep(0.06)  # several flushes
        rec.close()
    run = open_store(db).run(rec.run_id)
    assert run.status == ev.COMPLETED
    assert run.metrics("loss").step.tolist() == list(range(200)) and len(run.metrics("acc")) == 200
    assert run.logs().message.tolist() == [f"line {s}" for s in range(200) if s != 120]
    assert run.events("marker").step.tolist() == [0, 50, 100, 150]
    refused = run.events(ev.RECORD_REFUSED)
    assert len(refused) == 1
    data = refused.data.iloc[0]
    assert data["table"] == "tmon_logs" and data["step"] == 120 and data["message"] == "poison"
    assert "poisoned record refused by the trigger" in data["reason"]
    assert "tmon_logs record" in refused.message.iloc[0]
    said = [str(w.message) for w in caught if issubclass(w.category, TMonStoreWarning)]
    assert len(said) == 1 and "tmon_logs record" in said[0] and "step 120" in said[0], said
    assert not any("could not write to" in p for p in rec.problems), rec.problems  # the store was fine
    assert live(run) == [("b.ckpt", 120)] and len(run.checkpoints(include_deleted=True)) == 4


@pytest.mark.slow  # hypothesis' generation of arbitrary text, on a loaded machine
def test_the_text_rule_fits_every_column_and_changes_nothing_twice():
    pytest.importorskip("hypothesis")
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from tmon_core.store.text import storable

    @settings(max_examples=60, deadline=None)
    @given(
        st.text(st.characters(blacklist_categories=()), max_size=400), st.sampled_from([2, 16, 64, 250, None])
    )
    def check(t, limit):
        out = storable(t, limit)
        out.encode("utf-8")  # no lone surrogate left
        assert "\x00" not in out and len(out) <= (limit or 10**6)
        assert storable(out, limit) == out
        if t.isascii() and "\x00" not in t and len(t) <= (limit or 10**6):
            assert out == t  # text both databases take is stored as it is

    check()


def test_a_value_no_column_can_hold_is_refused_before_the_write(db):
    rec = quiet_recorder(db)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for s in range(30):
            rec.log({"loss": float(s)}, step=s)
            if s == 10:
                rec.sample({"wall_time": time.time(), "host": "h", "ram_used": 2**70})  # beyond 64 bits
                rec.sample({"wall_time": time.time(), "host": "h", "ram_used": 1024})
                rec.event("huge", step=2**64, message="a step beyond 64 bits")
                rec.update_run(total_steps="thirty")
        rec.close(ev.COMPLETED)
    run = open_store(db).run(rec.run_id)
    assert run.status == ev.COMPLETED and run.metrics("loss").step.tolist() == list(range(30))
    assert run.samples().ram_used.tolist() == [1024]
    refused = sorted((d["table"], d["field"]) for d in run.events(ev.RECORD_REFUSED).data)
    assert refused == [("tmon_events", "step"), ("tmon_runs", "total_steps"), ("tmon_samples", "ram_used")]
    assert run.events("huge").empty


def test_a_store_that_is_down_still_keeps_the_backlog_and_refuses_nothing(store_url, tmp_path):
    import sqlite3

    rec = quiet_recorder(store_url, busy_timeout=0.1)
    rec.log({"x": 0.0}, step=0)
    assert rec.flush()
    blocker = sqlite3.connect(tmp_path / "tmon.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        for s in range(1, 100):
            rec.log({"x": float(s)}, step=s)
            rec.log_record("WARNING", f"line {s}", step=s)
        time.sleep(0.5)
        blocker.execute("ROLLBACK")
        blocker.close()
        rec.close()
    run = open_store(store_url).run(rec.run_id)
    assert run.metrics("x").step.tolist() == list(range(100)) and len(run.logs()) == 99
    assert run.events(ev.RECORD_REFUSED).empty and len(run.events(ev.STORE_GAP)) == 1
    assert any("locked" in p for p in rec.problems)


# ---------------------------------------------------------------------------- a store made writable again
def _nobody():
    try:
        import pwd

        return pwd.getpwnam("nobody")
    except (ImportError, KeyError):
        return None


@pytest.mark.slow
@pytest.mark.parametrize("what", ["file", "directory", "sidecars"])
def test_a_read_only_store_made_writable_again_recovers_in_the_same_process(what):
    """As a user without CAP_DAC_OVERRIDE (root ignores permissions): the recording runs in a child
    that drops to ``nobody``; the store is read-only for its first ~1.5 s."""
    nobody = _nobody()
    if os.geteuid() != 0 or nobody is None:
        pytest.skip("needs root, to run the recording as the user nobody")
    d = tempfile.mkdtemp(prefix="tmon-ro-")
    os.chown(d, nobody.pw_uid, nobody.pw_gid)
    path = os.path.join(d, "x.db")
    url = f"sqlite:///{path}"
    Recorder(url).close()
    if what == "sidecars":  # left read-only by an earlier process that opened the file while it was
        for suffix in ("-wal", "-shm"):
            open(path + suffix, "wb").close()
            os.chmod(path + suffix, 0o444)
    for name in os.listdir(d):
        os.chown(os.path.join(d, name), nobody.pw_uid, nobody.pw_gid)
    if what == "file":
        os.chmod(path, 0o444)
    elif what == "directory":
        os.chmod(d, 0o555)
    n = 150
    pid = os.fork()
    if pid == 0:  # the training process, as nobody
        code = 1
        try:
            os.setgid(nobody.pw_gid)
            os.setuid(nobody.pw_uid)
            warnings.simplefilter("ignore")
            rec = Recorder(url, run_name="ro", flush_interval=0.05, close_timeout=5)
            for s in range(n):
                rec.log({"x": float(s)}, step=s)
                time.sleep(3.0 / n)
            rec.close()
            code = 0 if rec.dropped == 0 else 2
        finally:
            os._exit(code)
    time.sleep(1.5)
    os.chmod(path, 0o644)
    os.chmod(d, 0o755)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    store = open_store(url)
    run = store.run(store.runs().query("name == 'ro'").id.iloc[0])
    assert run.status == ev.COMPLETED
    assert run.metrics("x").step.tolist() == list(range(n))
    assert len(run.events(ev.STORE_GAP)) == (0 if what == "sidecars" else 1)


# ---------------------------------------------------------------------------- what the user is told
def test_a_store_problem_is_said_once_on_one_channel(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")  # a store path under a regular file: never writable, even by root
    url = f"sqlite:///{tmp_path}/afile/sub/tmon.db"
    with warnings.catch_warnings(record=True) as caught, caplog.at_level(logging.DEBUG, logger="tmon"):
        warnings.simplefilter("always")
        rec = Recorder(url, flush_interval=0.05, close_timeout=0.3)
        for s in range(20):
            rec.log({"x": 1.0}, step=s)
        time.sleep(0.3)
        rec.close()
    said = [str(w.message) for w in caught if issubclass(w.category, TMonStoreWarning)]
    assert said == rec.problems  # each problem once, as a warning...
    assert len(said) == 2 and "cannot open its store" in said[0] and "lost" in said[1]
    assert not [r for r in caplog.records if r.name == "tmon"]  # ...and not a second time as a log line
    assert "[SQL:" not in said[0] and len(said[0]) < 400  # the database's words, not the statement


def test_warnings_turned_into_errors_never_raise_into_training(tmp_path, caplog):
    (tmp_path / "afile").write_text("x")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # python -W error, pytest -W error
        rec = Recorder(f"sqlite:///{tmp_path}/afile/sub/tmon.db", flush_interval=0.05, close_timeout=0.3)
        for s in range(20):
            rec.log({"x": 1.0}, step=s)
        rec.close()
    assert "cannot open its store" in rec.problems[0] and rec.dropped == 20
    assert any("cannot open its store" in r.getMessage() for r in caplog.records if r.name == "tmon")  # said


def test_schema_version_zero_says_what_is_wrong(store_url):
    Recorder(store_url).close()
    execute(store_url, "UPDATE tmon_schema SET version = 0")
    with pytest.raises(StoreVersionError, match=r"schema version 0 .*no tmon writes \(versions are 1 to"):
        open_store(store_url).runs()


# ---------------------------------------------------------------------------- checkpoints written again
def live(run) -> list[tuple[str, int]]:
    df = run.checkpoints(include_deleted=True)
    return sorted((os.path.basename(p), s) for p, s, d in zip(df.path, df.step, df.deleted) if not d)


def test_a_checkpoint_path_written_again_leaves_one_live_row_in_the_order_received(db, tmp_path):
    rec = quiet_recorder(db)
    a, b, c = (str(tmp_path / n) for n in ("a.ckpt", "b.ckpt", "c.ckpt"))
    rec.checkpoint(a, step=1)
    rec.checkpoint(b, step=1)
    assert rec.flush()
    rec.checkpoint(a, step=2)  # a rewritten in a later flush
    assert rec.flush()
    assert live(open_store(db).run(rec.run_id)) == [("a.ckpt", 2), ("b.ckpt", 1)]
    rec.checkpoint(b, step=3)  # within one flush: saved, removed, saved again
    rec.checkpoint_removed(b)
    rec.checkpoint(b, step=4)
    rec.checkpoint(c, step=3)  # saved twice, then removed
    rec.checkpoint(c, step=4)
    rec.checkpoint_removed(c)
    rec.checkpoint(a, step=5)  # saved twice
    rec.checkpoint(a, step=6)
    rec.close()
    run = open_store(db).run(rec.run_id)
    assert live(run) == [("a.ckpt", 6), ("b.ckpt", 4)]
    assert len(run.checkpoints(include_deleted=True)) == 9


@pytest.mark.slow  # a real fit (and the framework's import)
def test_keras_save_best_only_to_one_file_has_one_live_record(tmp_path, store_url):
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip(f"this test runs Keras on the torch backend, this process has {keras.backend.backend()}")
    import numpy as np

    from tmon_callbacks.keras import TMonCallback

    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu"),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="binary_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = (x.sum(axis=1) > 2).astype("float32")
    best = tmp_path / "best.keras"
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    ckpt = keras.callbacks.ModelCheckpoint(str(best), save_best_only=True, monitor="loss")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        history = model.fit(x, y, batch_size=16, epochs=6, verbose=0, callbacks=[cb, ckpt])
    run = open_store(store_url).run(cb.run_id)
    every = run.checkpoints(include_deleted=True)
    losses = history.history["loss"]
    improved = [e for e in range(6) if losses[e] == min(losses[: e + 1])]
    assert len(improved) >= 2 and every.epoch.tolist() == improved  # the same file, written at each
    rows = run.checkpoints()
    assert len(rows) == 1 and rows.path.iloc[0] == str(best) and rows.epoch.iloc[0] == improved[-1]
    assert rows.monitor_value.iloc[0] == pytest.approx(min(losses))


@pytest.mark.slow  # a real fit (and the framework's import)
def test_lightning_save_last_has_one_live_last_ckpt(tmp_path, store_url):
    pytest.importorskip("lightning")
    from lightning.pytorch import Trainer
    from lightning.pytorch.callbacks import ModelCheckpoint

    from examples.tiny_lightning import make
    from tmon_callbacks.lightning import TMonCallback

    TinyRegressor, SyntheticData = make("lightning.pytorch")
    cb = TMonCallback(store_url, flush_interval=0.05, sample_interval=None)
    # last.ckpt is written whenever a checkpoint is: at every epoch here
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpts", monitor="val_loss", save_top_k=-1, save_last=True)
    Trainer(
        max_epochs=3,
        callbacks=[cb, ckpt],
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=1,
        default_root_dir=tmp_path,
    ).fit(TinyRegressor(), SyntheticData(n=64, batch_size=16))
    run = open_store(store_url).run(cb.run_id)
    every = run.checkpoints(include_deleted=True)
    last = every[every.path == str(tmp_path / "ckpts" / "last.ckpt")]
    assert len(last) == 3 and last.deleted.tolist() == [True, True, False]  # written at each epoch
    assert last.step[~last.deleted].tolist() == [9]
    for row in run.checkpoints().itertuples():  # every live row names a file that holds its step
        assert os.path.exists(row.path)
    assert sorted(run.checkpoints().path) == sorted(str(p) for p in (tmp_path / "ckpts").iterdir())


# ---------------------------------------------------------------------------- anything at all
@pytest.mark.slow
def test_random_text_never_costs_a_good_record(db, tmp_path):
    pytest.importorskip("hypothesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    # every character, lone surrogates and NUL included, and long runs of them
    chars = st.characters(blacklist_categories=(), min_codepoint=0)
    texts = st.one_of(
        st.text(chars, max_size=40),
        st.text(chars, min_size=240, max_size=300),
        st.sampled_from(["\x00", "\ud800", "\udcff", UNDECODABLE, "é" * 300, ""]),
    )
    ops = st.lists(
        st.tuples(st.sampled_from(["key", "log", "event", "path", "monitor", "logger"]), texts), max_size=12
    )
    store = open_store(db)

    @settings(
        max_examples=30,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(ops)
    def check(ops):
        rec = Recorder(db, flush_interval=0.05)
        keys_ok = []
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            for s, (kind, t) in enumerate(ops):
                rec.log({"good": float(s)}, step=s)
                rec.log_record("INFO", f"good {s}", logger="good", step=s)
                if kind == "key":
                    try:
                        rec.log({t: 1.0}, step=s)
                        keys_ok.append(t)
                    except ValueError:
                        pass  # refused at log(), with the reason: the key is never rewritten
                elif kind == "log":
                    rec.log_record("WARNING", t, logger="any", step=s)
                elif kind == "logger":
                    rec.log_record("WARNING", "from a named logger", logger=t, step=s)
                elif kind == "event":
                    rec.event(t or "empty", step=s, message=t, data={t: t})
                elif kind == "path":
                    rec.checkpoint(os.path.join(tmp_path, t.replace("/", "_") or "empty"), step=s)
                else:
                    rec.checkpoint(os.path.join(tmp_path, "m.ckpt"), step=s, monitor=t)
            rec.close()
        run = store.run(rec.run_id)
        assert run.status == ev.COMPLETED
        n = len(ops)
        if n:
            assert run.metrics("good").step.tolist() == list(range(n))
            for k in keys_ok:
                assert len(run.metrics(k)) >= 1
        logs = run.logs()
        assert logs[logs.logger == "good"].message.tolist() == [f"good {s}" for s in range(n)]
        assert len(logs) == n + sum(kind in ("log", "logger") for kind, _ in ops)  # every one kept
        assert len(run.checkpoints(include_deleted=True)) == sum(
            kind in ("path", "monitor") for kind, _ in ops
        )
        assert run.events(ev.RECORD_REFUSED).empty

    check()
