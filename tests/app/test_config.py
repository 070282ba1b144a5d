"""Settings a deployment passes in: the database by parts, secrets from files (Docker secrets).
The password test runs `clipmed migrate` against a PostgreSQL that checks passwords."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic_settings import SettingsError
from sqlalchemy import URL, create_engine, make_url, text
from support.private_postgres import private_cluster

from app.config import Settings

# Every character a URL would need escaped, and a % that unescaping would eat.
HARD_PASSWORD = "p@ss%w/rd:1"
CLIPMED = str(Path(sys.executable).parent / "clipmed")


@pytest.fixture
def clean_env(monkeypatch):
    """No database or secret settings from the caller's environment."""
    for name in list(os.environ):
        if name.startswith("CLIPMED_") or name.startswith("DATABASE_URL"):
            monkeypatch.delenv(name)
    return monkeypatch


def test_the_url_from_parts_keeps_the_password_whole(clean_env):
    clean_env.setenv("CLIPMED_DB_HOST", "db.internal")
    clean_env.setenv("CLIPMED_DB_PORT", "6432")
    clean_env.setenv("CLIPMED_DB_USER", "clip med")
    clean_env.setenv("CLIPMED_DB_PASSWORD", HARD_PASSWORD)
    clean_env.setenv("CLIPMED_DB_NAME", "clipmed")
    url = make_url(Settings().database_url)
    assert (url.drivername, url.host, url.port) == ("postgresql+psycopg", "db.internal", 6432)
    assert (url.username, url.password, url.database) == ("clip med", HARD_PASSWORD, "clipmed")


def test_parts_and_a_url_together_are_refused(clean_env):
    clean_env.setenv("DATABASE_URL", "postgresql+psycopg://u@h/d")
    clean_env.setenv("CLIPMED_DB_HOST", "h")
    with pytest.raises(ValueError, match="either DATABASE_URL or CLIPMED_DB_HOST"):
        Settings()
    clean_env.delenv("DATABASE_URL")
    with pytest.raises(ValueError, match="CLIPMED_DB_USER, CLIPMED_DB_NAME"):
        Settings()


def test_secrets_come_from_files(clean_env, tmp_path):
    (tmp_path / "db").write_text(HARD_PASSWORD + "\n")  # as `echo` writes it
    (tmp_path / "admin").write_text("  spaces kept  ")
    clean_env.setenv("CLIPMED_DB_HOST", "h")
    clean_env.setenv("CLIPMED_DB_USER", "u")
    clean_env.setenv("CLIPMED_DB_NAME", "d")
    clean_env.setenv("CLIPMED_DB_PASSWORD_FILE", str(tmp_path / "db"))
    clean_env.setenv("CLIPMED_ADMIN_PASSWORD_FILE", str(tmp_path / "admin"))
    settings = Settings()
    assert make_url(settings.database_url).password == HARD_PASSWORD
    assert settings.admin_password.get_secret_value() == "  spaces kept  "

    (tmp_path / "url").write_text("postgresql+psycopg://u:x@h/d")
    for name in ("CLIPMED_DB_HOST", "CLIPMED_DB_USER", "CLIPMED_DB_NAME"):
        clean_env.delenv(name)
    clean_env.setenv("DATABASE_URL_FILE", str(tmp_path / "url"))
    assert Settings().migrate_database_url == "postgresql+psycopg://u:x@h/d"  # empty = the URL
    (tmp_path / "owner").write_text("postgresql+psycopg://owner:y@h/d\n")
    clean_env.setenv("CLIPMED_MIGRATE_DATABASE_URL_FILE", str(tmp_path / "owner"))
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u:x@h/d"
    assert settings.migrate_database_url == "postgresql+psycopg://owner:y@h/d"


def test_a_secret_set_twice_or_unreadable_is_refused(clean_env, tmp_path):
    (tmp_path / "admin").write_text("from the file")
    clean_env.setenv("CLIPMED_ADMIN_PASSWORD_FILE", str(tmp_path / "admin"))
    clean_env.setenv("CLIPMED_ADMIN_PASSWORD", "from the environment")
    with pytest.raises(SettingsError, match="both CLIPMED_ADMIN_PASSWORD and .*_FILE"):
        Settings()
    clean_env.delenv("CLIPMED_ADMIN_PASSWORD")
    clean_env.setenv("CLIPMED_ADMIN_PASSWORD_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError, match="CLIPMED_ADMIN_PASSWORD_FILE: cannot read"):
        Settings()
    (tmp_path / "empty").write_text("\n")
    clean_env.setenv("CLIPMED_ADMIN_PASSWORD_FILE", str(tmp_path / "empty"))
    with pytest.raises(SettingsError, match="is empty"):
        Settings()


def pragmas(engine) -> tuple[str, int]:
    with engine.connect() as connection:
        journal = connection.execute(text("PRAGMA journal_mode")).scalar_one()
        return journal, connection.execute(text("PRAGMA synchronous")).scalar_one()


def test_the_web_service_syncs_sqlite_at_checkpoints_unless_told_otherwise(clean_env, tmp_path):
    from app.db import make_engine
    from app.main import create_app

    clean_env.setenv("DATABASE_URL", f"sqlite:///{tmp_path / 'clipmed.db'}")
    engine = create_app().state.engine
    assert pragmas(engine) == ("wal", 1)  # NORMAL: the write-ahead log synced at checkpoints
    engine.dispose()
    clean_env.setenv("CLIPMED_SQLITE_SYNCHRONOUS", "full")
    engine = create_app().state.engine
    assert pragmas(engine) == ("wal", 2)  # FULL: every commit synced before the answer
    engine.dispose()
    # migrations, the CLI and the workers keep syncing every commit
    engine = make_engine(f"sqlite:///{tmp_path / 'clipmed.db'}")
    assert pragmas(engine) == ("wal", 2)
    engine.dispose()
    clean_env.setenv("CLIPMED_SQLITE_SYNCHRONOUS", "off")
    with pytest.raises(ValueError, match="sqlite_synchronous"):
        Settings()


def test_migrate_logs_in_with_a_hard_password_from_a_secret_file(tmp_path):
    """A role whose password holds @ % / :, set on a server that checks passwords over TCP;
    `clipmed migrate` given the parts and the password file gets in and grants the application
    role, a wrong password does not; the application role's settings with the owner's URL in
    CLIPMED_MIGRATE_DATABASE_URL_FILE migrate too."""
    with private_cluster(host_auth="scram-sha-256") as pg:
        admin = create_engine(pg.socket_url, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as connection:
                password = connection.exec_driver_sql("SELECT quote_literal(%s)", (HARD_PASSWORD,))
                connection.execute(text(f"CREATE ROLE clipmed LOGIN PASSWORD {password.scalar()}"))
                connection.execute(text("CREATE DATABASE clipmed OWNER clipmed"))
                connection.execute(text("CREATE ROLE clipmed_app LOGIN PASSWORD 'app:p@ss'"))
        finally:
            admin.dispose()
        secret = tmp_path / "db_password"
        secret.write_text(HARD_PASSWORD + "\n")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CLIPMED_", "DATABASE"))}
        env |= {
            "CLIPMED_DATA_DIR": str(tmp_path),
            "CLIPMED_DB_HOST": "127.0.0.1",
            "CLIPMED_DB_PORT": str(pg.port),
            "CLIPMED_DB_USER": "clipmed",
            "CLIPMED_DB_NAME": "clipmed",
            "CLIPMED_DB_PASSWORD_FILE": str(secret),
            "CLIPMED_DB_APP_ROLE": "clipmed_app",
        }
        done = subprocess.run([CLIPMED, "migrate"], env=env, capture_output=True, text=True)
        assert done.returncode == 0 and "warning" not in done.stderr, done.stderr
        report = json.loads(done.stdout)
        assert report["revision"] is not None
        assert HARD_PASSWORD not in done.stdout and "***" in report["database"]

        secret.write_text("p@ss%w/rd:2")
        refused = subprocess.run([CLIPMED, "migrate"], env=env, capture_output=True, text=True)
        assert refused.returncode != 0  # the exit code of a failure is the CLI's convention
        assert "password authentication failed" in refused.stderr
        assert "p@ss%w/rd" not in refused.stderr

        # the application role's parts, the owner's URL from a file
        (tmp_path / "app_password").write_text("app:p@ss\n")
        owner = URL.create(
            "postgresql+psycopg", "clipmed", HARD_PASSWORD, "127.0.0.1", pg.port, "clipmed"
        )
        (tmp_path / "migrate_url").write_text(owner.render_as_string(hide_password=False))
        env |= {
            "CLIPMED_DB_USER": "clipmed_app",
            "CLIPMED_DB_PASSWORD_FILE": str(tmp_path / "app_password"),
            "CLIPMED_MIGRATE_DATABASE_URL_FILE": str(tmp_path / "migrate_url"),
        }
        again = subprocess.run([CLIPMED, "migrate"], env=env, capture_output=True, text=True)
        assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
        assert json.loads(again.stdout)["database"].startswith("postgresql+psycopg://clipmed:***@")
