"""The roles an account can have (a module of its own: the CLI offers them as choices without
importing SQLAlchemy)."""

from __future__ import annotations

import enum


class Role(enum.StrEnum):
    clinician = "clinician"  # explains cases, sees their own explanations
    radiologist = "radiologist"  # also sees every explanation (and flags and reviews)
    admin = "admin"  # also users, jobs, models
