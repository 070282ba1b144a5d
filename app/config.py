"""Service settings: one pydantic-settings class, read from CLIPMED_* environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import AliasChoices, Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLIPMED_", extra="ignore")

    # Folder of cohorts, checkpoints and (by default) the SQLite database.
    data_dir: Path = Path("data")
    # SQLAlchemy URL; env DATABASE_URL (no prefix, as hosting platforms set it). Empty = SQLite
    # file <data_dir>/clipmed.db.
    database_url: str = Field(
        default="", validation_alias=AliasChoices("database_url", "DATABASE_URL")
    )
    # Folder of checkpoint folders; empty = <data_dir>/checkpoints.
    checkpoints_dir: Path | None = None
    # Folder of the frozen text encoder; empty = model.config.default_text_encoder().
    text_encoder: str = ""
    # Largest request body accepted by the explanation endpoint, in bytes.
    max_upload_bytes: int = Field(default=8 << 20, gt=0)
    # Threads per torch operation. Requests already run in parallel on the thread pool, and
    # per-op threads on top of them oversubscribe the cores (measured: bench/serve.py).
    torch_threads: int = Field(default=1, ge=1)
    # Where `clipmed serve` listens.
    host: str = "127.0.0.1"
    port: int = Field(default=8000, ge=0, le=65535)

    @model_validator(mode="after")
    def _fill_defaults(self) -> Settings:
        if not self.database_url:
            self.database_url = f"sqlite:///{self.data_dir / 'clipmed.db'}"
        if self.checkpoints_dir is None:
            self.checkpoints_dir = self.data_dir / "checkpoints"
        return self

    @property
    def default_checkpoint(self) -> Path:
        """The folder `clipmed demo` trains; registered by `clipmed serve` on an empty registry."""
        assert self.checkpoints_dir is not None
        return self.checkpoints_dir / "default"
