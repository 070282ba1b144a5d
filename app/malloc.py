"""glibc's allocator, told to give large freed buffers back to the operating system.

glibc serves an allocation of M_MMAP_THRESHOLD bytes or more (128 KiB at start) from a mapping of
its own, unmapped when freed. But the threshold moves: each such buffer freed raises it to that
buffer's size, up to 32 MiB, so from the first 8 MiB upload refused on, the next uploads and
what is copied from them come from the arenas (one per thread of the pool), where
freed memory stays resident. `clipmed serve` pins the threshold at startup, which stops it
moving: refusing sixteen concurrent 8 MiB segmentations then leaves the server ~+20 MiB
above idle instead of +115 MiB (bench/hostile_memory.py --corpus segmentation, in
docs/benchmarks.md with what else was measured: malloc_trim(0) after each large body left
+74 MiB, MALLOC_ARENA_MAX=2 +32 MiB).

glibc only (ctypes); elsewhere (musl, macOS) it does nothing and says so.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import platform

M_MMAP_THRESHOLD = -3  # mallopt's parameter number, from glibc's <malloc.h>
MMAP_THRESHOLD_BYTES = 1 << 20  # the size from which request bodies take turns, too


def pin_mmap_threshold(nbytes: int = MMAP_THRESHOLD_BYTES) -> bool:
    """mallopt(M_MMAP_THRESHOLD, nbytes) for this process: True if set; False where the C
    library is not glibc, or the environment already sets the threshold (MALLOC_MMAP_THRESHOLD_,
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...), which is then left as it is."""
    tunables = os.environ.get("GLIBC_TUNABLES", "")
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or "glibc.malloc.mmap_threshold" in tunables:
        return False
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    mallopt.restype = ctypes.c_int
    return mallopt(M_MMAP_THRESHOLD, nbytes) == 1
