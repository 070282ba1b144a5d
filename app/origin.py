"""Origin check of state-changing browser requests: defence in depth beside the CSRF token.

A POST, PUT, PATCH or DELETE that rides on a browser session (the session cookie, or the login
form) must name this site in `Origin` (every current browser sends it on such requests), or
failing that in `Referer`. Calls with `Authorization: Bearer` are exempt: another site cannot
make a browser send our token. A session-cookie request with neither header is refused too:
browsers always send one, so it comes from a script that may as well use a token.

This site is CLIPMED_PUBLIC_ORIGIN when set (the address users type, e.g. behind a proxy that
rewrites Host), else the request's own scheme and Host. Our pages send `Referrer-Policy:
same-origin`: under `no-referrer` a browser sends `Origin: null` even on our own forms.
"""

from __future__ import annotations

from urllib.parse import urlsplit

from starlette.requests import Request

from app.errors import Forbidden
from app.i18n import N_, Label

UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise(url: str) -> str | None:
    """scheme://host:port of `url` (default port made explicit), None when it has none, or
    has user information (no browser sends it: "http://evil@this-site" is not this site)."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port or DEFAULT_PORTS.get(parts.scheme.lower())
    except ValueError:  # a port that is not a number
        return None
    if not parts.scheme or not parts.hostname or port is None or "@" in parts.netloc:
        return None
    return f"{parts.scheme.lower()}://{parts.hostname.lower()}:{port}"


def this_site(request: Request) -> str | None:
    public = request.app.state.settings.public_origin
    if public:
        return normalise(public)
    return normalise(f"{request.url.scheme}://{request.headers.get('host', '')}")


def check_origin(request: Request) -> None:
    """Raises Forbidden, naming the problem, unless a state-changing request comes from this
    site. Call it only for browser-session requests (not for bearer-token calls)."""
    if request.method not in UNSAFE_METHODS:
        return
    site = this_site(request)
    origin = request.headers.get("origin")
    referer = request.headers.get("referer")
    if origin is not None:
        sent, header = origin, "Origin"
    elif referer:
        sent, header = referer, "Referer"
    else:
        raise Forbidden(
            N_(
                "cross-site request check: a state-changing browser request needs an Origin or "
                "Referer header naming this site (scripts: use Authorization: Bearer)"
            )
        )
    if site is None or normalise(sent) != site:
        shown = sent[:100]
        raise Forbidden(
            N_("cross-site request refused: %(header)s %(sent)s is not this site (%(site)s)"),
            header=header,
            sent=repr(shown),
            site=site or Label(N_("unknown host")),
        )
