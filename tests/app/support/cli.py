"""Running the real `clipmed` command against a service database, as an operator does."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clipmed_runner(data_dir: Path):
    """`run(*args, stdin="")`: the real `clipmed` command on the SQLite database in `data_dir`."""
    exe = Path(sys.executable).parent / "clipmed"
    env = {k: v for k, v in os.environ.items() if k != "DATABASE_URL"}
    env.update({"CLIPMED_DATA_DIR": str(data_dir), "NO_COLOR": "1"})

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [str(exe), *args], input=stdin, env=env, capture_output=True, text=True, timeout=120
        )

    return run
