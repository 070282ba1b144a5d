"""The models page: registered versions with their metrics side by side, and (admins) the
activation and rollback buttons."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from app import flagging, registry
from app.deps import Admin, AnyUser, ServingStateDep, SessionDep
from app.errors import AppError
from app.i18n import N_, gettext
from app.tables import Role
from app.version_metrics import compare_metrics
from app.web import render, render_error

# Shown through |tr on this page: the prediction modes (model.evaluate.MODEL_METHODS) and the
# history's actions (app.registry).
SHOWN_LABELS: tuple[str, ...] = (N_("top1"), N_("vote"), N_("head"), N_("served"))
SHOWN_LABELS += (N_("activate"), N_("reindex"))

router = APIRouter(tags=["pages"], include_in_schema=False, default_response_class=HTMLResponse)


@router.get("/models")
def models_page(
    request: Request,
    session: SessionDep,
    caller: AnyUser,
    activated: Annotated[str, Query(max_length=64)] = "",
) -> Response:
    """Registered versions, their validation metrics side by side, each field's flag and
    accepted-correction rates; admins also get activation buttons and the history. After an
    activation (`activated`), a notice says which version is now served."""
    versions = registry.list_versions(session)
    is_admin = caller.role == Role.admin
    active = next((v for v in versions if v.is_active), None)
    context = {
        # the version now served, named in the notice (its words are the template's)
        "notice": (
            activated if activated and active is not None and active.version == activated else None
        ),
        "models": versions,
        "metrics": compare_metrics(versions),
        "rates": flagging.rates_by_model(session),
        "is_admin": is_admin,
        "active": next((v for v in versions if v.is_active), None),
        "history": registry.history(session) if is_admin else [],
    }
    return render(request, "models.html", "models.html", context)


@router.post("/admin/models/{version}/activate", response_class=HTMLResponse)
async def activate_model(
    version: str, request: Request, session: SessionDep, state: ServingStateDep, caller: Admin
) -> Response:
    """The models page's Activate / Roll back buttons: serve `version` from now on."""
    try:
        await registry.activate_for_request(request, session, version, state, caller.user)
    except AppError as e:
        action = gettext("Could not activate model %(version)s.") % {"version": version}
        return render_error(request, e, action)
    # the models page says what happened (only while it is still true: see `models_page`)
    return RedirectResponse(f"/models?{urlencode({'activated': version})}", status_code=303)
