"""Typed dependencies the routes ask for."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from app.config import Settings
from app.errors import NoActiveModel
from app.serving import Serving, ServingState


def get_settings(request: Request) -> Settings:
    return request.app.state.settings


def get_session(request: Request) -> Iterator[Session]:
    with request.app.state.sessions() as session:
        yield session


def get_serving_state(request: Request) -> ServingState:
    return request.app.state.serving


def get_serving(state: Annotated[ServingState, Depends(get_serving_state)]) -> Serving:
    # Taken once per request: a version switch during the request does not affect it.
    serving = state.current
    if serving is None:
        raise NoActiveModel("no model is active; register and activate a checkpoint")
    return serving


SettingsDep = Annotated[Settings, Depends(get_settings)]
SessionDep = Annotated[Session, Depends(get_session)]
ServingStateDep = Annotated[ServingState, Depends(get_serving_state)]
ServingDep = Annotated[Serving, Depends(get_serving)]
