"""Engine, sessions and the declarative base (stable constraint names for migrations)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Literal

import pydantic_core
from sqlalchemy import (
    Connection,
    CursorResult,
    Delete,
    Engine,
    MetaData,
    Update,
    create_engine,
    event,
    make_url,
    text,
)
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


def json_text(value: Any) -> str:
    """The text of a JSON column, by pydantic's Rust encoder: an explanation's result (~7 kB,
    mostly floats) costs a third of `json.dumps`'s instructions. The same JSON values, NaN and
    Infinity written as json.dumps writes them; compact, non-ASCII characters as they are."""
    return pydantic_core.to_json(value, inf_nan_mode="constants").decode()


def make_engine(url: str, sqlite_synchronous: Literal["normal", "full"] = "full") -> Engine:
    """`sqlite_synchronous`: SQLite's PRAGMA synchronous under the write-ahead log (the web
    service's is Settings.sqlite_synchronous, which says what "normal" gives up)."""
    if url.startswith("sqlite"):
        # Requests run on a thread pool; each connection is still used by one thread at a time.
        engine = create_engine(
            url, connect_args={"check_same_thread": False}, json_serializer=json_text
        )
        synchronous = {"normal": "NORMAL", "full": "FULL"}[sqlite_synchronous]

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection, _record) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=5000")
            # Write-ahead log: readers never wait for the writer storing an explanation.
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA synchronous={synchronous}")
            cursor.close()

        return engine
    # pre-ping: a connection the server dropped (restart, failover) is replaced, not handed out.
    # connect_timeout: a server that is down answers 503 in seconds instead of hanging a request.
    connect_args = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": 5}
    return create_engine(
        url, pool_pre_ping=True, connect_args=connect_args, json_serializer=json_text
    )


# PostgreSQL advisory lock keys (any 64-bit numbers, fixed, ours alone): replicas started
# together take turns at migrating the schema and at the first-run bootstrap instead of racing.
MIGRATION_LOCK = 0x636C69706D656401  # "clipmed" 01
BOOTSTRAP_LOCK = 0x636C69706D656402


def lock_for_transaction(connection: Connection, key: int) -> None:
    """Wait for the advisory lock `key`, held until the connection's transaction ends (on
    SQLite, whose writers already take turns, nothing)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


@contextmanager
def advisory_lock(engine: Engine, key: int) -> Iterator[None]:
    """Hold the advisory lock `key` for the block, on a connection of its own, so the block may
    commit as often as it likes (on SQLite, nothing)."""
    if engine.dialect.name != "postgresql":
        yield
        return
    with engine.connect() as connection:
        connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": key})
        connection.commit()
        try:
            yield
        finally:
            connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": key})
            connection.commit()


def database_unavailable(error: BaseException) -> bool:
    """True when `error` says the database cannot be reached right now (server down or
    restarting, connection dropped, SQLite file locked or missing), not that a query is wrong."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    if not isinstance(error, OperationalError):
        return False
    if type(error.orig).__module__.startswith("sqlite3"):
        # sqlite3 also calls a bad query an OperationalError; only these are outages
        return any(s in str(error.orig) for s in ("locked", "unable to open", "disk I/O"))
    return True  # psycopg: connection failures and server conditions (shutdown, resources)


def unstorable_value_message(error: DBAPIError) -> str:
    """What a client is told about a value its database refused (a DataError): which column,
    where the driver says, and the kind of problem; never the server's DETAIL or CONTEXT lines,
    which quote stored rows, statements and internal names."""
    diag = getattr(error.orig, "diag", None)  # psycopg; sqlite3 has none
    column = getattr(diag, "column_name", None)
    where = f" in field {column!r}" if column else ""
    text = str(error.orig)
    if "NUL" in text and "0x00" in text:  # psycopg's own, client-side refusal
        return f"a value the database cannot store{where}: text must not contain a NUL character"
    return f"a value the database cannot store{where} (out of range, or of the wrong kind)"


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(engine, expire_on_commit=False)


def rows_changed(session: Session, statement: Update | Delete) -> int:
    """Runs an UPDATE or DELETE in `session` and returns how many rows it matched.
    (Session.execute is typed as returning a plain Result; for DML it is a CursorResult.)"""
    result = session.execute(statement)
    assert isinstance(result, CursorResult)
    return result.rowcount


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes; every stored time is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
