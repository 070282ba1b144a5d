"""Secrets from files: `<VAR>_FILE=/run/secrets/x` gives the setting <VAR> the file's content, the
convention of Docker secrets and of the official postgres image (POSTGRES_PASSWORD_FILE)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsError

# setting -> the environment variables that name it (each may have a _FILE variant)
SECRET_SETTINGS = {
    "database_url": ("DATABASE_URL", "CLIPMED_DATABASE_URL"),
    "migrate_database_url": ("CLIPMED_MIGRATE_DATABASE_URL",),
    "db_password": ("CLIPMED_DB_PASSWORD",),
    "admin_password": ("CLIPMED_ADMIN_PASSWORD",),
    "metrics_token": ("CLIPMED_METRICS_TOKEN",),
}


class SecretFiles(PydanticBaseSettingsSource):
    """A settings source reading <VAR>_FILE. The file's content is the value, less one trailing
    newline (what `echo secret > file` adds). A variable set both ways is refused, and so is a
    file that cannot be read: a secret silently missing would start the service without it."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # everything happens in __call__

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for setting, names in SECRET_SETTINGS.items():
            for name in names:
                path = os.environ.get(f"{name}_FILE")
                if path is None:
                    continue
                if os.environ.get(name):
                    raise SettingsError(f"both {name} and {name}_FILE are set: set one of them")
                try:
                    text = Path(path).read_text(encoding="utf-8")
                except (OSError, UnicodeDecodeError) as e:
                    raise SettingsError(f"{name}_FILE: cannot read {path}: {e}") from None
                value = text.removesuffix("\n")
                if not value:
                    raise SettingsError(f"{name}_FILE: {path} is empty")
                values[setting] = value
        return values
