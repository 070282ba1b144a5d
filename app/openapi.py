"""The OpenAPI document's conventions: operationIds a client generator can use as method names
(`createExplanation`, from the route function's name unless the route names its own), error
bodies as problem details (app.problems), and the two ways to sign in as security schemes
(declared by the gate in app.deps, so only gated operations list them)."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.routing import APIRoute

from app.problems import document_problems


def operation_id(route: APIRoute) -> str:
    """`create_explanation` -> `createExplanation`."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def install(app: FastAPI) -> None:
    generate = app.openapi

    def document() -> dict:
        if app.openapi_schema is None:
            document_problems(generate())  # builds and keeps app.openapi_schema
        return app.openapi_schema

    app.openapi = document  # type: ignore[method-assign]
