"""README "Backup and restore", done as written: pg_dump of the database (custom format) and a tar
of the data folder, restored into a new database and folder, give back the rows, the schema
revision, the append-only guard of the audit trail and the checkpoints."""

from __future__ import annotations

import shutil
import subprocess
import tarfile

import pytest
from sqlalchemy import create_engine, func, make_url, select, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from support.databases import fresh_postgres_database

from app import accounts, audit, migrate
from app.tables import AuditEvent, User


def libpq(url: str) -> str:
    """The URL as pg_dump and pg_restore take it (no SQLAlchemy driver name)."""
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def tools():
    if not (shutil.which("pg_dump") and shutil.which("pg_restore")):
        pytest.fail("pg_dump/pg_restore missing (Debian's postgresql-client)")


def test_a_dump_and_a_data_archive_restore_the_service(tools, tmp_path):
    data = tmp_path / "data"
    (data / "checkpoints" / "v1").mkdir(parents=True)
    (data / "checkpoints" / "v1" / "checkpoint.json").write_text('{"version": "v1"}')

    with fresh_postgres_database("clipmed_backup") as source:
        migrate.upgrade(source)
        engine = create_engine(source)
        try:
            with Session(engine) as session:
                accounts.create_user(session, "ana", "admin", "a long password")
                session.add(audit.make_event("user.create", "success", actor="ana"))
                session.commit()
        finally:
            engine.dispose()

        # the backup: the database and the data volume
        dump = tmp_path / "clipmed.dump"
        subprocess.run(["pg_dump", "--format=custom", f"--file={dump}", libpq(source)], check=True)
        with tarfile.open(tmp_path / "clipmed-data.tar.gz", "w:gz") as archive:
            archive.add(data, arcname="data")

    # the source is gone (dropped above); restore into a new, empty database and folder
    with fresh_postgres_database("clipmed_restore") as target:
        subprocess.run(
            ["pg_restore", "--no-owner", "--exit-on-error", f"--dbname={libpq(target)}", dump],
            check=True,
        )
        restored = tmp_path / "restored"
        with tarfile.open(tmp_path / "clipmed-data.tar.gz") as archive:
            archive.extractall(restored, filter="data")
        checkpoint = restored / "data" / "checkpoints" / "v1" / "checkpoint.json"
        assert checkpoint.read_text() == '{"version": "v1"}'

        assert migrate.current_revision(target) == migrate_head()
        migrate.upgrade(target)  # nothing to do: `clipmed migrate` after a restore is safe
        engine = create_engine(target)
        try:
            with Session(engine) as session:
                assert accounts.check_password(session, "ana", "a long password") is not None
                actions = session.scalars(select(AuditEvent.action)).all()
                assert actions == ["user.create"]
                # the sequences came along: new rows do not collide with restored ones
                accounts.create_user(session, "joan", "clinician", "another long password")
                session.add(audit.make_event("user.create", "success", actor="ana"))
                session.commit()
                assert session.scalar(select(func.count()).select_from(User)) == 2
            # the audit trail is still append-only
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(text("UPDATE audit_events SET outcome = 'forged'"))
            with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
                connection.execute(text("DELETE FROM audit_events"))
        finally:
            engine.dispose()


def migrate_head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(migrate.alembic_config("sqlite://")).get_current_head()
