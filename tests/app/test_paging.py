"""Lists that grow: recent explanations and the review queue, 50 rows a page (keyset), with
their filters, on 3,000 explanations and 2,000 flags written straight into the database."""

from __future__ import annotations

import html
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import event, insert, select

from app.tables import Explanation, Flag, FlagReason, FlagStatus, User

N_EXPLANATIONS = 3_000
N_FLAGS = 2_000
START = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
FIELDS = ("shape", "margin", "density")
ROW_LINK = re.compile(r'<td><a href="/explanations/([0-9a-f-]{36})">')
FLAG_ROW = re.compile(r'<tr class="flag" data-flag="(\d+)">')
NEXT = re.compile(r'<a href="([^"]+)" class="next-page"')


@pytest.fixture(scope="module")
def rows(service) -> dict:
    """What was written: explanations (id, at, owner, pseudonym) and flags (id, at, field,
    status, by, explanation); every third explanation shares its time with the one before."""
    with service.session() as session:
        users = dict(session.execute(select(User.username, User.id)).all())
        owners = [users[u] for u in ("clinician", "radiologist", "admin")]
        explanations = []
        for i in range(N_EXPLANATIONS):
            at = START + timedelta(minutes=7 * (i - i % 3 // 2))  # ties in time
            explanations.append(
                {
                    "id": str(uuid.UUID(int=i + 1)),
                    "created_at": at,
                    "input_sha256": f"{i:064x}",
                    "n_slices": 3,
                    "k": 5,
                    "model_version": "v-paging",
                    "catalog_version": "c-paging",
                    "result": {"texts": [{"text": f"paging text {i}"}]},
                    "features_npy": b"",
                    "owner_id": owners[i % 3],
                    "patient_pseudonym": f"P-{i % 13}",
                    "study_instance_uid": f"1.2.826.0.{i % 7}",
                }
            )
        session.execute(insert(Explanation), explanations)
        flags = []
        for i in range(N_FLAGS):
            flags.append(
                {
                    "id": i + 1,
                    "explanation_id": explanations[i]["id"],
                    "target": "field",
                    "field": FIELDS[i % 3],
                    "reason": FlagReason.wrong_value,
                    "model_version": "v-paging",
                    "catalog_version": "c-paging",
                    "created_by": users["radiologist"] if i % 2 else users["admin"],
                    "created_at": START + timedelta(minutes=11 * i),
                    "status": FlagStatus.accepted if i % 5 == 0 else FlagStatus.open,
                }
            )
        session.execute(insert(Flag), flags)
        session.commit()
    return {"explanations": explanations, "flags": flags, "users": users}


def walk(http, url: str, pattern: re.Pattern) -> list[str]:
    """Every row of every page from `url` on, following the Older links; no page over 50."""
    seen = []
    while url:
        page = http.get(url)
        assert page.status_code == 200, page.text
        found = pattern.findall(page.text)
        assert len(found) <= 50
        seen += found
        link = NEXT.search(page.text)
        url = html.unescape(link.group(1)) if link else ""
    return seen


def newest_first(items: list[dict]) -> list[str]:
    ordered = sorted(items, key=lambda r: (r["created_at"], r["id"]), reverse=True)
    return [r["id"] for r in ordered]


def test_every_explanation_once_in_order_across_60_pages(client_as, rows):
    seen = walk(client_as("admin"), "/explanations", ROW_LINK)
    assert seen == newest_first(rows["explanations"])


def test_the_explanation_filters_narrow_the_pages(client_as, rows):
    explanations, users = rows["explanations"], rows["users"]
    since, until = "2026-03-03", "2026-03-05"
    first, end = datetime(2026, 3, 3, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)
    in_days = [r for r in explanations if first <= r["created_at"] < end]
    url = f"/explanations?since={since}&until={until}&user=radiologist"
    expected = [r for r in in_days if r["owner_id"] == users["radiologist"]]
    assert len(expected) > 50 and walk(client_as("admin"), url, ROW_LINK) == newest_first(expected)

    url = f"/explanations?patient_pseudonym=P-4&study_instance_uid=1.2.826.0.2&until={until}"
    expected = [
        r
        for r in explanations
        if r["patient_pseudonym"] == "P-4"
        and r["study_instance_uid"] == "1.2.826.0.2"
        and r["created_at"] < end
    ]
    assert walk(client_as("radiologist"), url, ROW_LINK) == newest_first(expected)
    # a clinician sees only their own rows, whatever user they name
    mine = [r for r in in_days if r["owner_id"] == users["clinician"]]
    url = f"/explanations?since={since}&until={until}&user=admin"
    assert walk(client_as("clinician"), url, ROW_LINK) == newest_first(mine)
    assert walk(client_as("admin"), "/explanations?user=nobody", ROW_LINK) == []


def test_the_review_queue_pages_and_filters(client_as, rows):
    flags, users = rows["flags"], rows["users"]
    by_id = {r["id"]: r for r in rows["explanations"]}
    open_ids = [str(f["id"]) for f in reversed(flags) if f["status"] == FlagStatus.open]
    assert walk(client_as("admin"), "/review", FLAG_ROW) == open_ids

    url = (
        "/review?status=open&field=margin&user=radiologist&since=2026-03-02&until=2026-03-09"
        "&patient_pseudonym=P-5"
    )
    first, end = datetime(2026, 3, 2, tzinfo=UTC), datetime(2026, 3, 10, tzinfo=UTC)
    expected = [
        str(f["id"])
        for f in reversed(flags)
        if f["status"] == FlagStatus.open
        and f["field"] == "margin"
        and f["created_by"] == users["radiologist"]
        and first <= f["created_at"] < end
        and by_id[f["explanation_id"]]["patient_pseudonym"] == "P-5"
    ]
    assert expected and walk(client_as("radiologist"), url, FLAG_ROW) == expected
    accepted = [str(f["id"]) for f in reversed(flags) if f["status"] == FlagStatus.accepted]
    assert walk(client_as("admin"), "/review?status=accepted", FLAG_ROW) == accepted


@pytest.mark.parametrize(
    ("query", "says"),
    [
        ("since=2026-13-01", "from '2026-13-01' is not a date"),
        ("since=2026-03-05&until=2026-03-01", "the range starts (2026-03-05) after it ends"),
        ("after=not-a-position", "'after' is not a position in this list"),
        ("study_instance_uid=abc", "study_instance_uid 'abc' is not valid"),
    ],
)
@pytest.mark.parametrize("path", ["/explanations", "/review"])
def test_bad_filters_are_422_naming_the_problem(client_as, rows, path, query, says):
    got = client_as("admin").get(f"{path}?{query}")
    assert got.status_code == 422 and says in html.unescape(got.text)


def test_a_page_reads_51_rows_and_never_the_stored_inputs(service, client_as, rows):
    statements = []

    def record(conn, cursor, statement, parameters, context, executemany):
        if "FROM explanations" in statement:
            statements.append((statement, parameters))

    engine = service.app.state.engine
    event.listen(engine, "before_cursor_execute", record)
    try:
        assert client_as("admin").get("/explanations?since=2026-03-02").status_code == 200
    finally:
        event.remove(engine, "before_cursor_execute", record)
    (statement, parameters), *_ = statements
    assert "LIMIT" in statement and "features_npy" not in statement
    values = parameters.values() if isinstance(parameters, dict) else parameters
    assert 51 in values
