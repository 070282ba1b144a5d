"""Flag and correct over the API: a radiologist flags, a reviewer decides, the export shows it."""

from __future__ import annotations

import csv
import io
import re

from sqlalchemy import select
from support.databases import events
from support.http import post_json
from support.inputs import case

from app import registry
from app.tables import Explanation, Flag, FlagReason, FlagStatus, User


def explained(client) -> dict:
    response = post_json(client, case().tolist(), k=3)
    assert response.status_code == 201, response.text
    return response.json()


def valid_codes(service, model_version: str, field: str) -> list[str]:
    with service.session() as session:
        return list(registry.field_values(session, model_version)[field])


def test_flag_review_and_export(service, client_as):
    radiologist, admin = client_as("radiologist"), client_as("admin")
    body = explained(client_as("clinician"))
    explanation_id = body["id"]
    field = body["explanation"]["fields"][0]["field"]
    url = f"/api/v1/explanations/{explanation_id}/flags"
    code = valid_codes(service, body["model_version"], field)[-1]

    assert (
        client_as("clinician").post(url, json={"field": field, "reason": "other"}).status_code
        == 403
    )
    made = radiologist.post(
        url,
        json={
            "field": field,
            "reason": "wrong_value",
            "corrected_value": code,
            "comment": "see slice 3",
        },
    )
    assert made.status_code == 201, made.text
    flag = made.json()
    assert (flag["status"], flag["field"], flag["corrected_value"]) == ("open", field, code)
    assert flag["model_version"] == body["model_version"]
    assert flag["catalog_version"] == body["catalog_version"]
    text = radiologist.post(url, json={"text_rank": 1, "reason": "not_visible"}).json()
    assert text["text"] == body["explanation"]["texts"][0]["text"]
    rejected = radiologist.post(url, json={"text_rank": 2, "reason": "ambiguous"}).json()

    both = radiologist.post(url, json={"field": field, "text_rank": 1, "reason": "other"})
    unknown = radiologist.post(url, json={"field": "no-such-field", "reason": "other"})
    assert both.status_code == unknown.status_code == 422
    # a correction is one of the field's codes, never free text: the refusal lists them
    invalid = radiologist.post(
        url, json={"field": field, "reason": "wrong_value", "corrected_value": "7"}
    )
    assert invalid.status_code == 422
    assert all(
        c in invalid.json()["detail"] for c in valid_codes(service, body["model_version"], field)
    )
    on_text = radiologist.post(
        url, json={"text_rank": 1, "reason": "other", "corrected_value": code}
    )
    assert on_text.status_code == 422

    queue = radiologist.get("/api/v1/flags", params={"status": "open", "field": field}).json()
    assert flag["id"] in [f["id"] for f in queue]
    assert all(f["field"] == field and f["status"] == "open" for f in queue)

    review = f"/api/v1/flags/{flag['id']}/review"
    accepted = admin.post(review, json={"decision": "accept", "note": "agreed"})
    assert accepted.status_code == 200 and accepted.json()["status"] == "accepted"
    again = admin.post(review, json={"decision": "reject"})
    assert again.status_code == 422  # decided once
    admin.post(f"/api/v1/flags/{text['id']}/review", json={"decision": "accept"})
    admin.post(f"/api/v1/flags/{rejected['id']}/review", json={"decision": "reject", "note": "no"})

    exported = radiologist.get("/api/v1/corrections").json()
    mine = [row for row in exported if row["explanation_id"] == explanation_id]
    served = body["explanation"]["fields"][0]["served"]["value"]  # what the reviewer saw
    assert [
        (r["kind"], r["field"], r["served_value"], r["corrected_value"], r["text"]) for r in mine
    ] == [
        ("label_override", field, served, code, None),
        ("hard_negative", None, None, None, text["text"]),
    ]
    rows = list(csv.DictReader(io.StringIO(admin.get("/api/v1/corrections?format=csv").text)))
    assert str(flag["id"]) in [row["flag_id"] for row in rows]
    assert str(rejected["id"]) not in [row["flag_id"] for row in rows]

    actions = [e.action for e in events(service, target_type="flag", target_id=str(flag["id"]))]
    assert actions == ["flag.create", "flag.accept"]


def test_accepted_free_text_from_before_is_never_exported(service, client_as):
    """Rows stored before values were checked: reported in a header, never in the export."""
    body = explained(client_as("clinician"))
    field = body["explanation"]["fields"][0]["field"]
    with service.session() as session:
        row = session.get(Explanation, body["id"])
        radiologist = session.scalar(select(User).where(User.username == "radiologist"))
        legacy = [
            Flag(
                explanation_id=row.id,
                target="field",
                field=field,
                reason=FlagReason.wrong_value,
                corrected_value=value,
                model_version=row.model_version,
                catalog_version=row.catalog_version,
                created_by=radiologist.id,
                status=FlagStatus.accepted,
            )
            for value in ("looks spiculated to me", None)
        ]
        session.add_all(legacy)
        session.commit()
        ids = {flag.id for flag in legacy}

    for format in ("json", "csv"):
        exported = client_as("radiologist").get("/api/v1/corrections", params={"format": format})
        assert exported.status_code == 200
        assert int(exported.headers["x-skipped-corrections"]) >= 2
        flag_ids = (
            {row["flag_id"] for row in exported.json()}
            if format == "json"
            else {int(row["flag_id"]) for row in csv.DictReader(io.StringIO(exported.text))}
        )
        assert not flag_ids & ids


def test_a_correction_starts_from_the_vote_in_explanations_from_before_the_served_answer(
    service, client_as
):
    body = explained(client_as("clinician"))
    field = body["explanation"]["fields"][0]
    with service.session() as session:  # as stored before the served read-out existed
        row = session.get(Explanation, body["id"])
        result = dict(row.result)
        result["fields"] = [{k: v for k, v in f.items() if k != "served"} for f in result["fields"]]
        row.result = result
        session.commit()
    code = valid_codes(service, body["model_version"], field["field"])[0]
    flag = (
        client_as("radiologist")
        .post(
            f"/api/v1/explanations/{body['id']}/flags",
            json={"field": field["field"], "reason": "wrong_value", "corrected_value": code},
        )
        .json()
    )
    client_as("admin").post(f"/api/v1/flags/{flag['id']}/review", json={"decision": "accept"})
    exported = client_as("radiologist").get("/api/v1/corrections").json()
    (mine,) = [r for r in exported if r["flag_id"] == flag["id"]]
    assert mine["served_value"] == field["vote"]["value"]


def test_the_models_page_shows_flag_rates_per_field(service, client_as):
    import re

    radiologist = client_as("radiologist")
    body = explained(radiologist)
    field = body["explanation"]["fields"][-1]["field"]
    url = f"/api/v1/explanations/{body['id']}/flags"
    flag = radiologist.post(url, json={"field": field, "reason": "ambiguous"}).json()
    client_as("admin").post(f"/api/v1/flags/{flag['id']}/review", json={"decision": "accept"})

    page = radiologist.get("/models")
    assert page.status_code == 200
    row = re.search(
        rf'data-version="{re.escape(body["model_version"])}" data-field="{re.escape(field)}">'
        r'.*?class="flag-rate">([0-9.]+)</td>\s*<td class="accepted-rate">([0-9.]+)<',
        page.text,
        re.S,
    )
    assert row is not None, page.text
    flag_rate, accepted_rate = map(float, row.groups())
    assert flag_rate > 0 and 0 < accepted_rate <= flag_rate


def test_the_queue_and_the_explanation_show_who_flagged_what_against_what(service, client_as):
    radiologist, admin = client_as("radiologist"), client_as("admin")
    body = explained(client_as("clinician"))
    evidence = body["explanation"]["fields"][0]
    field = evidence["field"]
    with service.session() as session:
        labels = registry.field_values(session, body["model_version"])[field]
    served = evidence.get("served") or evidence["vote"]
    proposed = next(code for code in labels if code != served["value"])
    url = f"/api/v1/explanations/{body['id']}/flags"
    flag = radiologist.post(
        url, json={"field": field, "reason": "wrong_value", "corrected_value": proposed}
    ).json()

    queue = admin.get("/review")
    assert queue.status_code == 200
    row = re.search(rf'<tr class="flag" data-flag="{flag["id"]}">(.*?)</tr>', queue.text, re.S)
    assert row is not None, queue.text
    assert '<td class="flagged-by">radiologist<br><time datetime="' in row.group(1)
    assert f'<td class="served">{served["label"]}</td>' in row.group(1)
    assert f'<td class="proposed">{labels[proposed]}</td>' in row.group(1)
    assert 'value="accept"' in row.group(1)  # the admin may decide it

    page = client_as("clinician").get(f"/explanations/{body['id']}")
    listed = re.search(
        r'<table class="flags" id="explanation-flags">(.*?)</table>', page.text, re.S
    )
    assert listed is not None, page.text
    assert f'data-flag="{flag["id"]}"' in listed.group(1) and labels[proposed] in listed.group(1)
