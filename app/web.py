"""Rendering HTML: the templates and static files at the repository's top level (beside
`app/`), and one URL, two renderings (the full page, or only the fragment when htmx asks with
`HX-Request`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.templating import Jinja2Templates
from markupsafe import Markup, escape
from starlette.responses import HTMLResponse

from app import i18n
from app.errors import AppError
from app.i18n import N_
from app.jobs.messages import shown_job_message

ROOT_DIR = Path(__file__).resolve().parent.parent  # the repository (or the image's /app)
TEMPLATES_DIR = ROOT_DIR / "templates"
STATIC_DIR = ROOT_DIR / "static"
RESEARCH_NOTICE = N_("Research use only — not for diagnosis")

templates = Jinja2Templates(directory=TEMPLATES_DIR)
i18n.install(templates.env)
templates.env.globals["research_notice"] = RESEARCH_NOTICE
templates.env.filters["job_message"] = shown_job_message


def csrf_token(request: Request) -> str:
    """The signed-in browser session's CSRF token ("" for bearer tokens and anonymous pages)."""
    principal = getattr(request.state, "principal", None)
    return (principal.csrf_token or "") if principal is not None else ""


def csrf_field(request: Request) -> Markup:
    """The hidden field every state-changing form carries (htmx sends the header instead)."""
    return Markup('<input type="hidden" name="csrf_token" value="{}">').format(
        escape(csrf_token(request))
    )


templates.env.globals["csrf_token"] = csrf_token
templates.env.globals["csrf_field"] = csrf_field


def local_path(target: str | None) -> str | None:
    """`target` when it is a path on this site, else None: no "//host", no "/\\host" (which
    browsers read as "//host"), no scheme, no control characters (open redirects)."""
    if (
        not target
        or not target.startswith("/")
        or target.startswith(("//", "/\\"))
        or any(ord(c) < 0x20 or c == "\\" for c in target)
    ):
        return None
    return target


def is_htmx(request: Request) -> bool:
    # htmx sends "true"; a history-restore request, or a boosted form (a confirmed admin
    # action, its redirect followed), wants the full page.
    return (
        request.headers.get("hx-request") == "true"
        and request.headers.get("hx-history-restore-request") != "true"
        and request.headers.get("hx-boosted") != "true"
    )


def render(
    request: Request,
    page: str,
    fragment: str,
    context: dict[str, Any],
    status_code: int = 200,
    headers: dict[str, str] | None = None,
) -> HTMLResponse:
    """`fragment` for htmx requests, else `page` (which includes the fragment)."""
    name = fragment if is_htmx(request) else page
    response = templates.TemplateResponse(
        request, name, context, status_code=status_code, headers=headers
    )
    response.headers["Vary"] = "HX-Request"
    return response


@dataclass(frozen=True)
class ErrorWording:
    """How an error page speaks to a clinician: a heading naming what kind of failure it is,
    and what to do next; the service's own (technical) message is shown beneath them."""

    heading: str
    advice: str


ERROR_WORDING: dict[int, ErrorWording] = {
    403: ErrorWording(
        N_("You are not allowed to do this"),
        N_(
            "Your account's role does not include this action. Ask an administrator if you need it."
        ),
    ),
    404: ErrorWording(
        N_("Not found"),
        N_(
            "It does not exist, or your account cannot see it. Check the address, or go back to "
            "the list it came from."
        ),
    ),
    409: ErrorWording(
        N_("This cannot be done now"),
        N_(
            "It no longer fits the current state (for example, the job has already ended, or the "
            "model served does not match this input). Reload the page to see where things stand."
        ),
    ),
    413: ErrorWording(
        N_("The file is too large"),
        N_("Send only the nodule's features or its segmentation, not a whole scan."),
    ),
    415: ErrorWording(
        N_("This type of file cannot be read"),
        N_("Send one of the formats listed on the upload form."),
    ),
    422: ErrorWording(
        N_("This input cannot be used"),
        N_(
            "Something in what was sent is not valid; the detail below names it. Correct it and "
            "try again."
        ),
    ),
    429: ErrorWording(N_("Too many attempts"), N_("Wait a little, then try again.")),
    503: ErrorWording(
        N_("The service is unavailable"),
        N_("Try again in a moment. If it goes on, tell an administrator."),
    ),
}
UNKNOWN_ERROR = ErrorWording(
    N_("Something went wrong"), N_("Try again; if it happens again, tell an administrator.")
)
# On the upload form the next step is about the file.
UPLOAD_ADVICE: dict[int, str] = {
    422: N_(
        "Check that the file holds one nodule's features or its segmentation, in one of the "
        "formats listed on the form, then choose it again."
    ),
    409: N_(
        "The model served now cannot read this input (the detail below says why). Ask an "
        "administrator which model to use, or send the nodule's segmentation instead."
    ),
}


def error_wording(error: AppError) -> ErrorWording:
    return ERROR_WORDING.get(error.status_code, UNKNOWN_ERROR)


def error_message(error: AppError) -> str:
    """The error's message in the reader's language: its template translated and filled in,
    the values that are labels translated too (as the API sends it where no catalogue has it)."""
    translated = i18n.gettext(error.template)
    if not error.values:
        return translated
    values = {
        name: i18n.translate_label(value) if isinstance(value, i18n.Label) else value
        for name, value in error.values.items()
    }
    return translated % values


templates.env.globals["error_wording"] = error_wording
templates.env.globals["error_message"] = error_message
# what the error page says was (not) done, after the status and the code
NOTHING_STORED = N_("nothing was stored.")
NOTHING_CHANGED = N_("nothing was changed.")


def render_error(
    request: Request,
    error: AppError,
    action: str | None = None,
    note: str = NOTHING_CHANGED,
    advice: str | None = None,
) -> HTMLResponse:
    """A domain error as the error page (or its fragment): a heading for its kind of failure,
    what was being done (`action`: a message id, or a message already translated), what to do
    next, and the service's message beneath."""
    context = {"error": error, "error_action": action, "error_note": note, "error_advice": advice}
    return render(request, "error.html", "_error.html", context, error.status_code)
