"""The served model follows the registry: loaded at start-up, then polled, so an activation or
catalog swap made by another process (a worker, another replica) is served here too."""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress

from sqlalchemy.orm import Session, sessionmaker
from starlette.concurrency import run_in_threadpool

from app import registry
from app.serving import ServingState

log = logging.getLogger(__name__)


def load_active_model(sessions: sessionmaker[Session], state: ServingState) -> None:
    """At start-up: serve the registry's active version, if any."""
    # A broken active checkpoint leaves the process up but not ready (/readyz says why).
    try:
        with sessions() as session:
            serving = registry.load_active(session, state)
    except Exception:
        log.exception("could not load the active model")
        return
    if serving is None:
        log.warning("no active model version; /readyz answers 503 until one is activated")
    else:
        log.info("serving model %s (catalog %s)", serving.model_version, serving.catalog_version)


def sync_active_model(sessions: sessionmaker[Session], state: ServingState) -> None:
    # Activations and catalog swaps made by another process (a worker, another replica).
    with sessions() as session:
        if registry.sync_active(session, state):
            current = state.current
            log.info(
                "now serving model %s (catalog %s), as the registry says",
                current.model_version if current else None,
                current.catalog_version if current else None,
            )


async def watch_registry(
    sessions: sessionmaker[Session], state: ServingState, poll_seconds: float, stop: asyncio.Event
) -> None:
    """Follows the registry every `poll_seconds` until `stop` is set."""
    last_error = None
    while True:
        with suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), poll_seconds)
        if stop.is_set():
            return
        try:
            await run_in_threadpool(sync_active_model, sessions, state)
            last_error = None
        except Exception as e:  # database away, or a checkpoint that does not load
            if str(e) != last_error:  # once per distinct problem, not every poll
                log.exception("could not follow the registry")
            last_error = str(e)
