"""The reader's language and number format.

The language is the `lang` cookie (set by the switch in the page header) when it names one we
offer, else the best of the browser's Accept-Language (by q) among them, else English. Numbers
follow the same language, with the region the browser asked for when it named one ("en-GB",
"es-MX"): a count is a whole number ("6,600"; in Catalan "6.600"), a score keeps three decimals
with the reader's decimal mark ("0.457"; "0,457").
"""

from __future__ import annotations

import re
from contextvars import ContextVar, Token
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.numbers import format_decimal

LANGUAGES = ("en", "ca", "es")  # what the interface is offered in
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"

# One entry of Accept-Language: a tag (or *) and its optional weight.
_ACCEPT_ENTRY = re.compile(
    r"^\s*([A-Za-z]{1,8}(?:-[A-Za-z0-9]{1,8})*|\*)\s*(?:;\s*q\s*=\s*([0-9.]+))?\s*$"
)


def accepted_tags(header: str) -> list[str]:
    """The tags of an Accept-Language header, most wanted first (q=0 means "not this");
    malformed entries are skipped rather than failing the request."""
    weighted = []
    for position, entry in enumerate(header.split(",")[:32]):  # a header is not a workload
        match = _ACCEPT_ENTRY.match(entry)
        if not match:
            continue
        try:
            q = float(match[2]) if match[2] is not None else 1.0
        except ValueError:
            continue
        if 0.0 < q <= 1.0:
            weighted.append((-q, position, match[1]))
    return [tag for _, _, tag in sorted(weighted)]


def _language_of(tag: str) -> str:
    return tag.split("-", 1)[0].lower()


def choose_locale(cookie: str | None, accept_language: str) -> Locale:
    """The interface language and number format for one request (see the module docstring)."""
    tags = accepted_tags(accept_language)
    if cookie in LANGUAGES:
        language = cookie
    else:
        language = next(
            (_language_of(t) for t in tags if _language_of(t) in LANGUAGES), DEFAULT_LANGUAGE
        )
    # the browser's own region for the chosen language, when it gave one Babel knows
    for tag in tags:
        if _language_of(tag) == language and "-" in tag:
            try:
                return Locale.parse(tag, sep="-")
            except (ValueError, UnknownLocaleError):
                break
    return Locale.parse(language)


_current: ContextVar[Locale | None] = ContextVar("reader_locale", default=None)


def current_locale() -> Locale:
    """The locale of the request being answered (English outside one)."""
    return _current.get() or Locale.parse(DEFAULT_LANGUAGE)


def set_current_locale(chosen: Locale) -> Token:
    """Makes `chosen` the locale of what runs next in this context (ReaderLocale, per request)."""
    return _current.set(chosen)


def reset_current_locale(token: Token) -> None:
    _current.reset(token)


def format_count(value: float, locale: Locale) -> str:
    """A count as a whole number with the locale's grouping ("6,600"; "6.600")."""
    return format_decimal(round(value), format="#,##0", locale=locale)


def format_score(value: float, locale: Locale) -> str:
    """A score with three decimals and the locale's decimal mark ("0.457"; "0,457")."""
    return format_decimal(value, format="#,##0.000", locale=locale, decimal_quantization=True)


def count_filter(value: float) -> str:
    return format_count(value, current_locale())


def score_filter(value: float) -> str:
    return format_score(value, current_locale())


def install(env: Any) -> None:
    """Adds the number filters to a Jinja environment: `{{ n|count }}`, `{{ f1|score }}`."""
    env.filters["count"] = count_filter
    env.filters["score"] = score_filter
