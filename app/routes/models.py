"""The model registry, read-only over HTTP."""

from __future__ import annotations

from fastapi import APIRouter

from app import registry
from app.deps import AnyUser, SessionDep
from app.schemas import ModelVersionOut

router = APIRouter(prefix="/api/v1/models", tags=["models"])


@router.get("", response_model=list[ModelVersionOut])
def list_models(session: SessionDep, _: AnyUser) -> list[ModelVersionOut]:
    """Registered model versions, newest first, with the active one flagged."""
    return [ModelVersionOut.from_row(row) for row in registry.list_versions(session)]
