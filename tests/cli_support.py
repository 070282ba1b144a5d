"""Running the `clipmed` command as a user does, for the tests of the CLI and of the readers it
serves (tests import this, never another test module)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def clipmed(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    bin_dir = Path(sys.executable).parent
    exe = bin_dir / "clipmed"
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "clipmed"]
    proc = subprocess.run(
        [*cmd, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "NO_COLOR": "1"},
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"clipmed {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc
