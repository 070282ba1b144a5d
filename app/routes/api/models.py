"""The model registry over HTTP: versions, activation (and so rollback), history."""

from __future__ import annotations

from fastapi import APIRouter, Request

from app import registry
from app.deps import Admin, AnyUser, ServingStateDep, SessionDep
from app.payloads import ModelEventOut, ModelVersionOut, Text
from app.problems import responses
from app.tables import Role

router = APIRouter(prefix="/api/v1/models", tags=["models"])

ERRORS = responses(401, 403, 404, 422)


@router.get(
    "", response_model=list[ModelVersionOut], response_model_exclude_unset=True, responses=ERRORS
)
def list_models(session: SessionDep, caller: AnyUser) -> list[ModelVersionOut]:
    """Registered model versions, newest first, with the active one flagged. Only admins see
    each checkpoint's folder (`path`)."""
    with_path = caller.role == Role.admin
    return [ModelVersionOut.from_row(row, with_path) for row in registry.list_versions(session)]


@router.get(
    "/history",
    response_model=list[ModelEventOut],
    responses=ERRORS,
    operation_id="listModelHistory",
)
def model_history(session: SessionDep, _: Admin) -> list[ModelEventOut]:
    """Every activation (a rollback is the activation of an older version) and catalog swap,
    newest first, with who and when."""
    return [ModelEventOut.from_row(row) for row in registry.history(session)]


@router.post("/{version}/activate", response_model=ModelVersionOut, responses=ERRORS)
async def activate_model(
    version: Text, request: Request, session: SessionDep, state: ServingStateDep, caller: Admin
) -> ModelVersionOut:
    """Serve `version` from now on; requests already running finish with the version they
    started with. Rolling back is the same call with the older version."""
    row = await registry.activate_for_request(request, session, version, state, caller.user)
    return ModelVersionOut.from_row(row)
