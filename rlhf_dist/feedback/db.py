"""Open the feedback database: engine, SQLite settings, Alembic migrations, sessions.

SQLite (default): WAL mode, a busy timeout, and BEGIN IMMEDIATE for every transaction, so
concurrent writers queue for the lock instead of failing half-way with "database is locked".
PostgreSQL: READ COMMITTED; races are settled by the tables' unique constraints (see tables.py).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
import threading
from contextlib import contextmanager, nullcontext
from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

MIGRATIONS = Path(__file__).parent / "migrations"
SQLITE_BUSY_TIMEOUT_MS = 30_000
# SQLite has one writer at a time. Threads of one process queue on this lock (FIFO-ish, no sleep);
# other processes (a CLI next to the server) still meet SQLite's busy timeout, which sleeps and retries.
_SQLITE_WRITE_LOCKS: dict[str, threading.RLock] = {}


class FeedbackDBError(ValueError):
    """The database URL is malformed or the server cannot be reached."""


def default_db_url(output_dir: str | Path) -> str:
    return f"sqlite:///{Path(output_dir).resolve() / 'feedback.sqlite'}"


def _sqlite_setup(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:  # noqa: ANN001 - DB-API objects
        dbapi_conn.isolation_level = None  # we issue BEGIN ourselves (below)
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.execute("PRAGMA synchronous=NORMAL")  # WAL + NORMAL: a commit survives a process kill
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn) -> None:  # noqa: ANN001
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def make_engine(db_url: str) -> Engine:
    """An engine for db_url; a SQLite file's folder is created. Bad URLs raise FeedbackDBError."""
    try:
        url = make_url(db_url)
    except ArgumentError as err:
        raise FeedbackDBError(f"feedback.db_url: cannot parse {db_url!r} ({err})") from None
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, pool_size=20, max_overflow=40, pool_timeout=60)
        _sqlite_setup(engine)
        _SQLITE_WRITE_LOCKS.setdefault(str(engine.url), threading.RLock())
        return engine
    if url.get_backend_name() != "postgresql":
        raise FeedbackDBError(f"feedback.db_url: {db_url!r}: only sqlite:/// and postgresql+psycopg:// are supported")
    return create_engine(url, pool_size=20, max_overflow=40, pool_timeout=60, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (a no-op when it is there already)."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # "Context impl SQLiteImpl" on every open
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":  # two processes starting at once migrate one at a time
            conn.execute(text("SELECT pg_advisory_xact_lock(827361)"))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()


def open_database(db_url: str, retries: int = 3) -> sessionmaker[Session]:
    """Engine + migrations + a session factory. Unreachable servers raise FeedbackDBError."""
    engine = make_engine(db_url)
    for attempt in range(retries):
        try:
            migrate(engine)
            break
        except OperationalError as err:
            if attempt == retries - 1:
                shown = make_url(db_url).render_as_string(hide_password=True)
                raise FeedbackDBError(f"feedback.db_url: cannot open {shown}: {err.orig}") from None
            time.sleep(0.5 * (attempt + 1))
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def transaction(sessions: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: committed when the block ends, rolled back when it raises."""
    bind = sessions.kw["bind"]
    lock = _SQLITE_WRITE_LOCKS.get(str(bind.url)) if bind.dialect.name == "sqlite" else None
    with lock or nullcontext(), sessions() as session, session.begin():
        yield session


def db_url_of(db_url: str | None, output_dir: str | Path) -> str:
    """feedback.db_url, or the default SQLite file in the run directory."""
    return db_url or default_db_url(output_dir)
