"""The requests' hot path on the thread pool: every caller lookup and every explanation, at most
Settings.request_threads of them at once.

That work is CPU and the GIL. Given a thread per request (the pool has 40), sixteen clients kept
sixteen threads handing the GIL to each other at every torch operation: 290 context switches per
explanation instead of 15 at one client, and 1.8 times the CPU per explanation
(docs/benchmarks.md). Requests beyond the limit wait their turn on the event loop, which costs
nothing while they wait."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from app.config import Settings

T = TypeVar("T")


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set), not the machine's."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def make_limiter(settings: Settings) -> anyio.CapacityLimiter:
    return anyio.CapacityLimiter(settings.request_threads or usable_cores())


async def run_on_hot_path(request: Any, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)` on the thread pool, as one of the hot path's limited threads."""
    return await anyio.to_thread.run_sync(work, *args, limiter=request.app.state.hot_path)
