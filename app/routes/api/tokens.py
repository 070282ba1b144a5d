"""Personal API tokens: created by their owner, revoked by their owner or an admin."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel

from app import accounts, audit
from app.deps import AnyUser, Principal, SessionDep
from app.payloads import RowId, UtcDatetime
from app.problems import responses
from app.tables import ApiToken, Role

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])
ERRORS = responses(401, 403, 404, 422)


class TokenOut(BaseModel):
    id: int
    user_id: int
    created_at: UtcDatetime
    revoked_at: UtcDatetime | None

    @classmethod
    def from_row(cls, row: ApiToken) -> TokenOut:
        return cls.model_validate(row, from_attributes=True)


class NewToken(TokenOut):
    token: str  # shown once; only its hash is stored


def _owner_filter(caller: Principal) -> int | None:
    return None if caller.role == Role.admin else caller.user.id


@router.get("", response_model=list[TokenOut], responses=ERRORS)
def list_tokens(session: SessionDep, caller: AnyUser) -> list[TokenOut]:
    """Your tokens (an admin sees everyone's), newest first; never the tokens themselves."""
    return [TokenOut.from_row(r) for r in accounts.list_tokens(session, _owner_filter(caller))]


@router.post("", status_code=201, response_model=NewToken, responses=ERRORS)
def create_token(request: Request, session: SessionDep, caller: AnyUser) -> NewToken:
    """A new token of your own."""
    row, token = accounts.issue_token(session, caller.user)
    audit.record_request(
        request, "token.create", "success", target_type="token", target_id=str(row.id)
    )
    return NewToken(**TokenOut.from_row(row).model_dump(), token=token)


@router.post("/{token_id}/revoke", response_model=TokenOut, responses=ERRORS)
def revoke_token(
    token_id: RowId, request: Request, session: SessionDep, caller: AnyUser
) -> TokenOut:
    """Revoke one of your tokens (an admin: anyone's)."""
    row = accounts.revoke_token_id(session, token_id, _owner_filter(caller))
    audit.record_request(
        request, "token.revoke", "success", target_type="token", target_id=str(row.id)
    )
    return TokenOut.from_row(row)
