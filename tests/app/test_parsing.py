"""The strict integer reader, and what a database's refusal of a value tells the client."""

from __future__ import annotations

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DataError
from support.databases import postgres_url

from app.db import unstorable_value_message
from app.errors import InvalidInput
from app.parsing import parse_int


@pytest.mark.parametrize(
    ("typed", "number"), [("5", 5), (" +7 ", 7), ("-0", 0), ("007", 7), ("-3", -3)]
)
def test_plain_ascii_integers_in_range_are_read(typed, number):
    assert parse_int(typed, "n", -5, 10) == number


@pytest.mark.parametrize(
    ("typed", "problem"),
    [
        ("\u0663", "n must be a whole number between 1 and 50, got '\u0663'"),
        ("\u00b2", "got '\u00b2'"),
        ("--3", "got '--3'"),
        ("+-3", "got '+-3'"),
        ("3.0", "got '3.0'"),
        ("1_000", "got '1_000'"),
        ("", "got ''"),
        ("9" * 5000, "n must be between 1 and 50, got a 5000-digit number"),
        ("-" + "9" * 5000, "got a -5000-digit number"),
        ("0" * 5000 + "7", None),  # leading zeros are no magnitude
        ("51", "n must be between 1 and 50, got 51"),
        # new since the attack: other scripts' digits, Unicode signs and spaces, lone signs
        ("\uff13", "got '\uff13'"),  # fullwidth 3
        ("\U0001d7d1", "got"),  # mathematical bold 3
        ("\u22123", "got '\u22123'"),  # minus sign
        ("\u207b3", "got"),  # superscript minus
        ("\u00a03", r"got '\xa03'"),  # no-break space: str.strip() would drop it
        ("\x1c3", r"got '\x1c3'"),  # an information separator, whitespace to str.strip()
        ("3\u200b", "got"),  # zero-width space
        ("3\x00", r"got '3\x00'"),
        ("+", "got '+'"),
        ("-", "got '-'"),
        ("\t\n", "got"),
        ("0b11", "got '0b11'"),
        ("1 000", "got '1 000'"),
        ("\u0663" * 30, "got"),
        ("0", "n must be between 1 and 50, got 0"),
    ],
)
def test_anything_else_is_refused_naming_the_parameter_and_range(typed, problem):
    if problem is None:
        assert parse_int(typed, "n", 1, 50) == 7
        return
    with pytest.raises(InvalidInput) as refused:
        parse_int(typed, "n", 1, 50)
    assert problem in refused.value.message
    assert len(refused.value.message) < 150


def test_a_postgresql_data_error_is_told_without_detail_or_context():
    engine = create_engine(postgres_url())
    try:
        with engine.connect() as connection, pytest.raises(DataError) as refused:
            connection.execute(text("SELECT CAST(:v AS json)"), {"v": '{"secret": [1, 2'})
    finally:
        engine.dispose()
    assert "DETAIL" in str(refused.value) or "JSON data" in str(refused.value)  # what it says
    message = unstorable_value_message(refused.value)
    assert message.startswith("a value the database cannot store")
    for internal in ("DETAIL", "CONTEXT", "JSON data", "secret", "SELECT", "json"):
        assert internal not in message
