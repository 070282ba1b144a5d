"""Accounts over REST, for admins: list them, deactivate, activate, change a role, reset a
password. The logic (ending credentials, the last admin, the audit) is app.users'."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from app import users
from app.deps import Admin, SessionDep
from app.payloads import RowId, UtcDatetime
from app.problems import responses
from app.tables import Role, User

router = APIRouter(prefix="/api/v1/users", tags=["users"])
ERRORS = responses(401, 403, 404, 409, 422)


class UserOut(BaseModel):
    id: int
    username: str
    role: Role
    is_active: bool
    created_at: UtcDatetime

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": 7,
                    "username": "m.garcia",
                    "role": "radiologist",
                    "is_active": True,
                    "created_at": "2026-11-30T09:12:44Z",
                }
            ]
        }
    )

    @classmethod
    def from_row(cls, row: User) -> UserOut:
        return cls.model_validate(row, from_attributes=True)


class UserChange(BaseModel):
    user: UserOut
    changed: bool = Field(description="False when the account already was so (nothing ended)")
    sessions_ended: int = Field(description="Browser sessions of the account that were ended")
    tokens_revoked: int = Field(description="API tokens of the account that were revoked")

    @classmethod
    def of(cls, change: users.Change) -> UserChange:
        return cls(
            user=UserOut.from_row(change.user),
            changed=change.changed,
            sessions_ended=change.sessions_ended,
            tokens_revoked=change.tokens_revoked,
        )


class RoleChange(BaseModel):
    role: Role

    model_config = ConfigDict(json_schema_extra={"examples": [{"role": "radiologist"}]})


class PasswordReset(BaseModel):
    password: str = Field(max_length=1024, description="The new password: 8 characters or more")

    model_config = ConfigDict(json_schema_extra={"examples": [{"password": "a long new phrase"}]})


@router.get("", response_model=list[UserOut], responses=ERRORS)
def list_users(session: SessionDep, _: Admin) -> list[UserOut]:
    """Every account, by username."""
    return [UserOut.from_row(row) for row in users.list_users(session)]


@router.post("/{user_id}/deactivate", response_model=UserChange, responses=ERRORS)
def deactivate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> UserChange:
    """The account can no longer sign in; its sessions and tokens end now (409: the last
    active admin)."""
    return UserChange.of(users.deactivate(session, user_id, users.Actor.of_request(request)))


@router.post("/{user_id}/activate", response_model=UserChange, responses=ERRORS)
def activate_user(user_id: RowId, request: Request, session: SessionDep, _: Admin) -> UserChange:
    """The account can sign in again."""
    return UserChange.of(users.activate(session, user_id, users.Actor.of_request(request)))


@router.post("/{user_id}/role", response_model=UserChange, responses=ERRORS)
def set_user_role(
    user_id: RowId, body: RoleChange, request: Request, session: SessionDep, _: Admin
) -> UserChange:
    """A new role; the account's sessions and tokens end (409: the last active admin)."""
    actor = users.Actor.of_request(request)
    return UserChange.of(users.set_role(session, user_id, body.role, actor))


@router.post("/{user_id}/password", response_model=UserChange, responses=ERRORS)
def reset_user_password(
    user_id: RowId, body: PasswordReset, request: Request, session: SessionDep, _: Admin
) -> UserChange:
    """A new password; every session and token of the account ends."""
    actor = users.Actor.of_request(request)
    return UserChange.of(users.reset_password(session, user_id, body.password, actor))
