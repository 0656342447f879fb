"""Engines for a tmon store: URL resolution, SQLite pragmas, schema creation and version check."""

from __future__ import annotations

import os
import stat
import time

from sqlalchemy import Engine, create_engine, event, inspect, select
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError

from .schema import SCHEMA_VERSION, Base, SchemaVersion, StoreVersionError, lock_schema

DEFAULT_URL = "sqlite:///tmon.db"
ENV_VAR = "TMON_STORE"
#: how long a SQLite connection waits for another writer's lock before giving up (ms)
DEFAULT_BUSY_TIMEOUT_MS = 5000


def resolve_url(url: str | os.PathLike | None = None) -> str:
    """``url`` if given, else ``$TMON_STORE``, else ``sqlite:///tmon.db`` in the working directory.

    A bare file path (``runs.db``, ``/data/tmon.db``) means a SQLite file.
    """
    if url is None:
        url = os.environ.get(ENV_VAR) or DEFAULT_URL
    url = os.fspath(url)
    if not isinstance(url, str) or not url.strip():
        raise ValueError(f"store must be a database URL or a file path, received store={url!r}")
    if "://" not in url:
        url = "sqlite:///" + url
    try:
        make_url(url)
    except (ArgumentError, ValueError) as exc:
        raise ValueError(f"store={url!r} is not a valid database URL: {exc}") from None
    return url


def _is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def create_store_engine(url: str, *, writer: bool, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An engine for ``url``.

    SQLite: WAL journal (a reader never blocks the writer), a busy timeout, and for a
    ``writer`` engine every transaction starts with ``BEGIN IMMEDIATE``: a deferred
    transaction that reads and then writes gets SQLITE_BUSY at once, without waiting, when
    another process committed in between; taking the write lock up front lets the busy
    timeout do its job, so several processes can write one file.
    """
    if not _is_sqlite(url):
        return create_engine(url, pool_pre_ping=True, pool_size=2, max_overflow=2)

    path = make_url(url).database
    if path and path != ":memory:":
        parent = os.path.dirname(os.path.abspath(path))
        if parent and not os.path.isdir(parent):
            os.makedirs(parent, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": busy_timeout_ms / 1000, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record):
        # take transaction control away from the sqlite3 module so BEGIN is ours to emit
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        try:
            cur.execute("PRAGMA journal_mode=WAL")
        except Exception:  # read-only file system: stay in the current mode
            pass
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()
        if path and path != ":memory:":
            writable_sidecars(path)

    begin = "BEGIN IMMEDIATE" if writer else "BEGIN"

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        # straight to the driver: SQLAlchemy's execution context for a fixed statement costs a
        # writer tens of microseconds per flush, and GIL hand-offs inside a training process
        conn.connection.dbapi_connection.execute(begin)

    return engine


def writable_sidecars(path: str) -> None:
    """Give back write permission to the database's ``-wal``/``-shm`` files this user owns.

    SQLite creates them with the database file's permission bits (``unixOpenSharedMemory``,
    ``findCreateFileMode``), whatever the umask: opened while the file was read-only (0444),
    they are created 0444 and stay so after the file is made writable again, and every later
    connection then opens them read-only and fails with "attempt to write a readonly database",
    for as long as the process runs. Read-only sidecars are never what the user meant: the
    file's own permission keeps deciding who writes the store."""
    for suffix in ("-wal", "-shm"):
        side = path + suffix
        try:
            st = os.stat(side)
            if st.st_uid == os.geteuid() and not st.st_mode & stat.S_IWUSR:
                os.chmod(side, stat.S_IMODE(st.st_mode) | stat.S_IWUSR)
        except OSError:  # gone, or not ours to change
            pass


def ensure_schema(engine: Engine, *, create: bool = True) -> int:
    """Create the tables on first use; refuse a store newer than this code. Returns its version."""
    for attempt in range(5):
        try:
            return _ensure_schema_once(engine, create)
        except OperationalError as exc:
            # two processes creating the same store at once: the loser retries
            if attempt == 4 or "already exists" not in str(exc) and "locked" not in str(exc):
                raise
            time.sleep(0.05 * (attempt + 1))
    raise AssertionError("unreachable")


def _ensure_schema_once(engine: Engine, create: bool) -> int:
    if inspect(engine).has_table(SchemaVersion.__tablename__):
        with engine.connect() as conn:
            version = conn.execute(select(SchemaVersion.version).order_by(SchemaVersion.id.desc())).scalar()
        if version is not None:
            _check_version(engine, version)
            if version < SCHEMA_VERSION:
                _upgrade(engine)
            return version
    if not create:
        raise FileNotFoundError(f"no tmon store at {engine.url.render_as_string(hide_password=True)}")
    with engine.begin() as conn:
        lock_schema(conn)
        Base.metadata.create_all(conn, checkfirst=True)
        existing = conn.execute(select(SchemaVersion.version)).scalar()
        if existing is None:
            conn.execute(
                SchemaVersion.__table__.insert().values(version=SCHEMA_VERSION, created_at=time.time())
            )
            existing = SCHEMA_VERSION
    _check_version(engine, existing)
    return existing


def _upgrade(engine: Engine) -> None:
    from .migrations import upgrade

    if engine.dialect.name == "sqlite":
        # a reader engine's deferred BEGIN would fail on a lock upgrade: upgrade through a writer
        writer = create_store_engine(engine.url.render_as_string(hide_password=False), writer=True)
        try:
            upgrade(writer)
        finally:
            writer.dispose()
    else:
        upgrade(engine)


def _check_version(engine: Engine, version: int) -> None:
    if type(version) is not int or version < 1:
        raise StoreVersionError(
            f"the tmon store at {engine.url.render_as_string(hide_password=True)} has schema version {version!r} in "
            f"its tmon_schema table, which no tmon writes (versions are 1 to {SCHEMA_VERSION}): the table was "
            f"changed by something other than tmon, so tmon neither reads nor upgrades this store"
        )
    if version > SCHEMA_VERSION:
        raise StoreVersionError(
            f"the tmon store at {engine.url.render_as_string(hide_password=True)} has schema version {version}, "
            f"but this tmon understands schema versions up to {SCHEMA_VERSION}: upgrade tmon to read it"
        )
