"""The reader's language and number format; the interface's gettext catalogues.

The language is the `lang` cookie (set by the switch in the page header) when it names one we
offer, else the best of the browser's Accept-Language (by q) among them, else English. Numbers
follow the same language, with the region the browser asked for when it named one ("en-GB",
"es-MX"): a count is a whole number ("6,600"; in Catalan "6.600"), a score keeps three decimals
with the reader's decimal mark ("0.457"; "0,457").

Catalogues: `app/locales/<lang>/LC_MESSAGES/messages.po`, compiled in memory at import (no .mo
files in the repository); `make messages` extracts the ids and updates them. Labels that arrive
as data (schema field and value labels, roles, statuses, flag reasons, error headings) are
marked with `N_` where they are defined and translated where they are shown (`|tr`). Messages
built from values keep them as %(name)s placeholders, so the message id is the same whatever
the values: an error's (`app.errors.AppError`), a job's progress (`app.jobs.messages`), a
page's notice. What the API sends, the logs and the FHIR export stay English. The model's
retrieved texts are not translated: they are what it was trained on.
"""

from __future__ import annotations

import functools
import gettext as gettext_module
import io
import re
from collections.abc import Iterable
from contextvars import ContextVar, Token
from pathlib import Path
from typing import Any

from babel import Locale, UnknownLocaleError
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.numbers import format_decimal

LANGUAGES = ("en", "ca", "es")  # what the interface is offered in
DEFAULT_LANGUAGE = "en"
LANGUAGE_COOKIE = "lang"
LOCALES_DIR = Path(__file__).resolve().parent / "locales"
# The language switch names each language in itself.
BUILTIN_SCHEMA_NAMES = ("lidc", "lidc-ratings", "thesis")  # model.datasets.builtin_schema
LANGUAGE_NAMES = {"en": "English", "ca": "Català", "es": "Español"}

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


def N_(message: str) -> str:
    """Marks a label for extraction (`make messages`); it is translated where it is shown."""
    return message


class Label(str):
    """A value of a message that is itself a message id (a field's name, a status): the API's
    English message shows it as it is; a page translates it with the message around it."""

    __slots__ = ()


def load_catalogue(language: str) -> gettext_module.NullTranslations:
    """A language's .po compiled in memory (English is the message ids themselves)."""
    po = LOCALES_DIR / language / "LC_MESSAGES" / "messages.po"
    if language == DEFAULT_LANGUAGE or not po.is_file():
        return gettext_module.NullTranslations()
    with po.open("rb") as f:
        catalog = read_po(f, locale=language)
    compiled = io.BytesIO()
    write_mo(compiled, catalog)  # fuzzy entries are left out, as msgfmt does
    compiled.seek(0)
    return gettext_module.GNUTranslations(compiled)


CATALOGUES = {language: load_catalogue(language) for language in LANGUAGES}


def current_language() -> str:
    language = current_locale().language
    return language if language in CATALOGUES else DEFAULT_LANGUAGE


def gettext(message: str) -> str:
    """`message` in the reader's language (itself where the catalogue has no translation)."""
    return CATALOGUES[current_language()].gettext(message)


def ngettext(singular: str, plural: str, n: int) -> str:
    return CATALOGUES[current_language()].ngettext(singular, plural, n)


def translate_label(value: object) -> str:
    """A label that arrives as data (a schema label, a status): translated when the
    catalogue has it, else shown as it is. None and "" stay empty."""
    if value is None or value == "":
        return ""
    return gettext(str(value))


_PLACEHOLDER = re.compile(r"%\\\(([a-z_]+)\\\)s")  # one %(name)s, as re.escape writes it


@functools.cache
def _read_back_pattern(message: str) -> re.Pattern[str]:
    """`message` as a regular expression whose groups are its placeholders (%% a plain %)."""
    escaped = re.escape(message).replace("%%", "%")
    return re.compile(_PLACEHOLDER.sub(r"(?P<\1>.+?)", escaped), re.S)


def read_back(text: str, messages: Iterable[str]) -> tuple[str, dict[str, str]] | None:
    """The first of `messages` (ids with %(name)s placeholders) that `text` is, filled in, and
    the values it was filled in with; None when it is none of them. For messages stored or
    sent in English (a job's progress, a low-confidence reason) and shown translated."""
    for message in messages:
        found = _read_back_pattern(message).fullmatch(text)
        if found is not None:
            return message, found.groupdict()
    return None


def install(env: Any) -> None:
    """Jinja's i18n extension on our catalogues (`{{ _("...") }}`, `{% trans %}`), the number
    filters (`|count`, `|score`), `|tr` for labels that arrive as data, and the language."""
    env.add_extension("jinja2.ext.i18n")
    env.policies["ext.i18n.trimmed"] = True  # {% trans %} ids without the template's line breaks
    env.install_gettext_callables(gettext, ngettext, newstyle=True)
    env.filters["count"] = count_filter
    env.filters["score"] = score_filter
    env.filters["tr"] = translate_label
    env.globals["current_language"] = current_language
    env.globals["language_names"] = LANGUAGE_NAMES


def extract_schema_labels(fileobj: Any, keywords: Any, comment_tags: Any, options: Any):
    """A Babel extraction method (babel.cfg): the built-in schemas' field and value labels,
    which arrive in templates as data, as message ids for `make messages`."""
    from model.datasets import builtin_schema

    for name in BUILTIN_SCHEMA_NAMES:
        for field in builtin_schema(name).fields:
            for label in (field.label, *field.value_labels):
                yield 0, "", str(label), [f"schema {name}, field {field.name}"]
