"""app.malloc: with the mmap threshold pinned, large freed buffers leave the process; without,
glibc keeps them resident once one has been freed (its threshold moves up past them)."""

from __future__ import annotations

import platform
import subprocess
import sys
from pathlib import Path

import pytest

from app.malloc import pin_mmap_threshold

REPO = Path(__file__).resolve().parents[2]

# Ten 8 MiB bodies in a worker thread (an arena of its own, as in the service's thread pool),
# each followed by something that lives on, then freed: how far the RSS stays up.
UPLOADS = """
import sys, threading
from pathlib import Path
from app.malloc import pin_mmap_threshold

pinned = sys.argv[1] == "pin" and pin_mmap_threshold()

def rss_mib():
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) // 1024

def uploads():
    bytearray(8 << 20)  # one freed: an unpinned threshold rises past 8 MiB
    before = rss_mib()
    bodies, kept = [], []
    for _ in range(10):
        bodies.append(bytearray(8 << 20))
        kept.append(bytearray(200 << 10))
    del bodies
    print(pinned, rss_mib() - before)

worker = threading.Thread(target=uploads)
worker.start()
worker.join()
"""

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)


def stays_resident(mode: str) -> tuple[bool, int]:
    done = subprocess.run(
        [sys.executable, "-c", UPLOADS, mode],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    pinned, grown = done.stdout.split()
    return pinned == "True", int(grown)


@glibc_only
def test_freed_bodies_leave_the_process_once_the_threshold_is_pinned():
    assert stays_resident("pin") == (True, pytest.approx(0, abs=16))
    pinned, grown = stays_resident("default")
    assert not pinned and grown > 40, f"glibc kept {grown} MiB of 80 MiB freed"


def test_a_threshold_set_in_the_environment_is_left_alone(monkeypatch):
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "4194304")
    assert pin_mmap_threshold() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4194304")
    assert pin_mmap_threshold() is False
