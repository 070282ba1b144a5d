"""Service settings: one pydantic-settings class, read from CLIPMED_* environment variables."""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)
from sqlalchemy import URL

from app.secret_files import SecretFiles


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPMED_", extra="ignore")

    # Folder of cohorts, checkpoints and (by default) the SQLite database.
    data_dir: Path = Path("data")
    # SQLAlchemy URL; env DATABASE_URL (no prefix, as hosting platforms set it). Empty = built
    # from the db_* parts below when db_host is set, else SQLite file <data_dir>/clipmed.db.
    database_url: str = Field(
        default="", validation_alias=AliasChoices("database_url", "DATABASE_URL")
    )
    # PostgreSQL by parts (CLIPMED_DB_HOST, ...), instead of a URL: no escaping, so a password
    # may hold @ % / : as it is. Any of these may come from a file (CLIPMED_DB_PASSWORD_FILE,
    # Docker secrets), as may every secret here (app.secret_files).
    db_host: str = ""
    db_port: int = Field(default=5432, ge=1, le=65535)
    db_user: str = ""
    db_password: SecretStr = SecretStr("")
    db_name: str = ""
    # PostgreSQL with an audit trail the service cannot rewrite: `clipmed migrate` connects as
    # the tables' owner through this URL (empty = database_url) and grants the role named in
    # db_app_role, the one database_url logs in as, only what the service needs (app.db_roles:
    # INSERT and SELECT on audit_events). Empty db_app_role = no grants (one role for all).
    # With the db_* parts, run migrate with the owner's CLIPMED_DB_USER and
    # CLIPMED_DB_PASSWORD(_FILE) (docker-compose.yml), or give this URL (or its _FILE).
    migrate_database_url: str = ""
    db_app_role: str = ""
    # Folder of checkpoint folders; empty = <data_dir>/checkpoints.
    checkpoints_dir: Path | None = None
    # Folder of the frozen text encoder; empty = model.config.text_encoder_path()'s choice.
    text_encoder: str = ""
    # Largest request body accepted by the explanation endpoint, in bytes.
    max_upload_bytes: int = Field(default=8 << 20, gt=0)
    # Most slices one uploaded case may have; up to model.inference.MAX_SLICES_PER_CASE.
    max_slices_per_upload: int = Field(default=512, ge=1, le=512)
    # A segmentation volume's voxels (mask .npy/.npz, NIfTI, DICOM SEG), checked from its header.
    max_mask_voxels: int = Field(default=32 * 512 * 512, ge=1)
    # Keep a DICOM SEG's patient and study attributes (name, ID, birth date, sex, accession...)
    # with its explanation, so the DICOM SR export files into the same study under the same
    # patient. False: they are dropped on upload (the SR then carries them empty, and only the
    # study, series and SEG UIDs link it to the study). README: "What a DICOM SEG leaves here".
    keep_seg_patient: bool = True
    # SQLite only (PRAGMA synchronous of the web service's connections, under its write-ahead
    # log): "normal" syncs the log to disk at checkpoints, not at every commit. A commit then
    # costs ~0.07 ms instead of an fsync (~4 ms here, docs/benchmarks.md), and the database
    # stays consistent whatever happens; but a power cut or an operating-system crash (not a
    # crash of the service) may lose the last commits before it, each explanation together
    # with its audit row. "full" syncs every commit before the answer goes out. PostgreSQL
    # keeps its own settings (synchronous_commit).
    sqlite_synchronous: Literal["normal", "full"] = "normal"
    # Threads per torch operation. Requests already run in parallel on the thread pool, and
    # per-op threads on top of them oversubscribe the cores (measured: bench/serve.py).
    torch_threads: int = Field(default=1, ge=1)
    # Threads of the requests' hot path at once (caller lookups, explanations; app.hot_path);
    # 0 = the usable cores. More only take turns at the GIL, at a CPU cost per request.
    request_threads: int = Field(default=0, ge=0)
    # At most this many explanation requests waiting for the hot path are explained together:
    # one model pass, one commit, each its own answer and audit row (app.explanations.together).
    # 1: each alone. More than 256 gains nothing (docs/benchmarks.md).
    explain_together_max: int = Field(default=32, ge=1, le=256)
    # Similar-case index of new checkpoints: "auto" (by size), "flat" (exact), "hnsw" or "ivf".
    case_index: Literal["auto", "flat", "hnsw", "ivf"] = "auto"
    # "auto" searches exactly below this many cases (model.catalog.EXACT_BELOW; benchmarks.md).
    case_index_exact_below: int = Field(default=50_000, ge=0)
    # Folder of evaluation reports; empty = <data_dir>/reports.
    reports_dir: Path | None = None
    # A worker renews its job's lease this often (seconds x 1/3); a job whose lease ran out
    # (its worker was killed) is taken over by another worker.
    job_lease_seconds: float = Field(default=30.0, gt=0)
    # Threads per torch operation in a worker; 0 = torch's default (every core: a worker runs
    # one job at a time).
    worker_torch_threads: int = Field(default=0, ge=0)
    # How often an idle worker looks for a job.
    job_poll_seconds: float = Field(default=1.0, gt=0)
    # How often the web service checks the registry for an activation or catalog swap made by
    # another process (a worker, another replica).
    registry_poll_seconds: float = Field(default=2.0, gt=0)
    # `clipmed serve` also starts a worker process: "auto" = when the database is SQLite (one
    # command gives the whole product); compose runs workers as their own service.
    embedded_worker: Literal["auto", "on", "off"] = "auto"
    # The first admin, created by `clipmed serve` when the database has no users. No default
    # password: with none set, a random one is printed once on the console.
    admin_username: str = "admin"
    admin_password: SecretStr = SecretStr("")
    # On an empty registry with no default checkpoint, `clipmed serve` queues a train job
    # (this cohort and preset, activated when done) so a new deployment ends up serving.
    bootstrap_train: bool = True
    bootstrap_cohort: str = "lidc"
    bootstrap_preset: str = "lidc"
    # Settings of that first training, as JSON (e.g. '{"epochs": 10}'); {} = the preset's.
    bootstrap_overrides: dict[str, bool | int | float | str] = Field(default_factory=dict)
    # Where `clipmed serve` listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)
    # On SIGTERM `clipmed serve` stops accepting and lets requests in flight finish for up to
    # this long; kept under docker's 10 s before SIGKILL (compose's default stop_grace_period).
    shutdown_timeout_seconds: float = Field(default=8.0, gt=0)
    # Log lines of serve and worker: "json" (one object a line, for a collector), "text", or
    # "auto" = text on a terminal, JSON otherwise (compose, systemd, a pipe).
    log_format: Literal["auto", "json", "text"] = "auto"
    # Lowest level logged (DEBUG also shows the access lines of health probes and scrapes).
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # When set, GET /metrics needs `Authorization: Bearer <this>`; empty = open (scraped from
    # inside the deployment network).
    metrics_token: SecretStr = SecretStr("")

    # Failed logins before 429: for one username from one address, and from one address over
    # any usernames, within this many seconds (app.throttle; counted in the database).
    login_max_failures: int = Field(default=5, ge=1)
    login_max_failures_per_address: int = Field(default=30, ge=1)
    login_window_seconds: float = Field(default=300.0, gt=0)
    # Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto `clipmed serve` believes
    # (addresses or networks, comma-separated; "*" = any): the client address (login throttle,
    # logs) and the https scheme (Secure cookies, HSTS) then come from them. Empty = none: the
    # TCP peer is the client and the connection's scheme is the scheme.
    forwarded_allow_ips: str = ""
    # The address users reach the service at, e.g. "https://clipmed.example.org": browser
    # requests that change state must come from it (app.origin). Empty = the request's own
    # scheme and Host.
    public_origin: str = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # <VAR>_FILE beside the environment; setting both is refused (app.secret_files).
        files = SecretFiles(settings_cls)
        return init_settings, env_settings, files, dotenv_settings, file_secret_settings

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if self.public_origin:
            parts = urlsplit(self.public_origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path.strip("/"):
                raise ValueError(
                    f"public_origin must be scheme://host[:port], not {self.public_origin!r}"
                )
        if self.database_url and self.db_host:
            raise ValueError("set either DATABASE_URL or CLIPMED_DB_HOST (and its parts), not both")
        if self.db_host:
            self.database_url = self._url_from_parts()
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'clipmed.db'}"
        if not self.migrate_database_url:
            self.migrate_database_url = self.database_url
        if self.db_app_role:
            from app.db_roles import check_role_name

            check_role_name(self.db_app_role)
        if self.checkpoints_dir is None:
            self.checkpoints_dir = self.data_dir / "checkpoints"
        if self.reports_dir is None:
            self.reports_dir = self.data_dir / "reports"
        return self

    def _url_from_parts(self) -> str:
        parts = {"CLIPMED_DB_USER": self.db_user, "CLIPMED_DB_NAME": self.db_name}
        missing = [name for name, value in parts.items() if not value]
        if missing:
            raise ValueError(f"CLIPMED_DB_HOST is set but {', '.join(missing)} is not")
        url = URL.create(
            "postgresql+psycopg",
            username=self.db_user,
            password=self.db_password.get_secret_value() or None,
            host=self.db_host,
            port=self.db_port,
            database=self.db_name,
        )
        # A URL string again (escaped where needed) for the code that takes one; make_url reads
        # the password back unchanged.
        return url.render_as_string(hide_password=False)

    @property
    def default_checkpoint(self) -> Path:
        """The folder `clipmed demo` trains; registered by `clipmed serve` on an empty registry."""
        assert self.checkpoints_dir is not None
        return self.checkpoints_dir / "default"

    @property
    def uvicorn_proxy_options(self) -> dict[str, bool | str]:
        """uvicorn's proxy settings for this service: header rewriting only for the proxies
        named in forwarded_allow_ips, off when there are none."""
        return {
            "proxy_headers": bool(self.forwarded_allow_ips),
            "forwarded_allow_ips": self.forwarded_allow_ips,
        }

    @property
    def runs_embedded_worker(self) -> bool:
        if self.embedded_worker == "auto":
            return self.database_url.startswith("sqlite")
        return self.embedded_worker == "on"
