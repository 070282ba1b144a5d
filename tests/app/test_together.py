"""Explanation requests waiting for the hot path together share one model pass and one commit
(app.explanations.together), and each keeps its own answer: its result, its refusal, its
audit row, its failure."""

from __future__ import annotations

import asyncio
import dataclasses

import anyio
import numpy as np
import pytest
from sqlalchemy import select
from support.inputs import case

from app import audit, migrate
from app.db import make_engine, make_session_factory
from app.errors import InvalidInput
from app.explanations.service import ExplanationInput
from app.explanations.together import Together, Waiting
from app.serving import Serving
from app.tables import AuditEvent, Explanation
from model.checkpoint import Checkpoint


@pytest.fixture
def stored(tmp_path, small_checkpoints):
    url = f"sqlite:///{tmp_path / 'clipmed.db'}"
    migrate.upgrade(url)
    engine = make_engine(url)
    serving = Serving.from_checkpoint(Checkpoint.load(small_checkpoints.first))
    yield make_session_factory(engine), serving
    engine.dispose()


def created(request_id: str):
    return lambda row: audit.make_event(
        "explanation.create",
        "success",
        actor="clin",
        target_type="explanation",
        target_id=row.id,
        request_id=request_id,
    )


def waiting(serving, features, k=5, event=None) -> Waiting:
    case_input = ExplanationInput(features, k)
    return Waiting(lambda: case_input, serving, None, event)


def answers(result) -> list[tuple]:
    return [
        (a["field"], (a.get("served") or {}).get("value"), a["vote"]["value"])
        for a in result["fields"]
    ]


async def explained_together(together: Together, cases: list[Waiting]) -> list:
    """Every case queued while the hot path is busy, then let go at once."""
    async with together.hot_path:
        tasks = [asyncio.ensure_future(together.explain(c)) for c in cases]
        while len(together.waiting) < len(cases):
            await asyncio.sleep(0.01)
    return await asyncio.gather(*tasks, return_exceptions=True)


def test_cases_that_wait_together_take_one_turn_and_keep_their_own_answers(stored):
    sessions, serving = stored
    features = [case(3), case(6), case(4, dim=serving.feature_dim + 1), case(9), case(2)]
    ks = [5, 5, 5, 3, 5]
    cases = [
        waiting(serving, f, k, created(f"request-{i}"))
        for i, (f, k) in enumerate(zip(features, ks, strict=True))
    ]

    turns: list[int] = []  # what the service's metrics observe

    async def main():
        together = Together(sessions, anyio.CapacityLimiter(1), most=32, on_turn=turns.append)
        outcomes = await explained_together(together, cases)
        return together, outcomes

    together, outcomes = asyncio.run(main())
    assert (together.turns, together.cases) == (1, 5) and turns == [5]  # one turn for all
    refused = outcomes[2]
    assert isinstance(refused, InvalidInput) and "features" in refused.message
    rows = [o for i, o in enumerate(outcomes) if i != 2]
    assert all(isinstance(r, Explanation) for r in rows)
    for i, row in zip([0, 1, 3, 4], rows, strict=True):
        alone = serving.explainer.explain(features[i], k=ks[i])  # as a request alone gets it
        assert row.k == ks[i] and row.n_slices == len(features[i])
        assert [t["text"] for t in row.result["texts"]] == [t["text"] for t in alone["texts"]]
        assert answers(row.result) == answers(alone)
        np.testing.assert_allclose(
            [t["similarity"] for t in row.result["texts"]],
            [t["similarity"] for t in alone["texts"]],
            atol=1e-4,
        )
    with sessions() as session:
        ids = set(session.scalars(select(Explanation.id)))
        events = {(e.target_id, e.request_id) for e in session.scalars(select(AuditEvent))}
    assert ids == {r.id for r in rows}
    assert events == {(row.id, f"request-{i}") for i, row in zip([0, 1, 3, 4], rows, strict=True)}


def test_a_shared_commit_that_fails_stores_each_case_alone(stored):
    """One case whose audit row cannot be stored (no action: NOT NULL) fails its own request;
    the explanations it waited with are stored, each with its audit row."""
    sessions, serving = stored

    def broken(row):
        event = created("broken")(row)
        event.action = None
        return event

    cases = [waiting(serving, case(4), event=created(f"ok-{i}")) for i in range(3)]
    cases.insert(1, waiting(serving, case(5), event=broken))

    async def main():
        together = Together(sessions, anyio.CapacityLimiter(1), most=32)
        return await explained_together(together, cases)

    outcomes = asyncio.run(main())
    assert "NOT NULL" in str(outcomes[1]) or "null" in str(outcomes[1]).lower()
    good = [outcomes[0], outcomes[2], outcomes[3]]
    assert all(isinstance(o, Explanation) for o in good)
    with sessions() as session:
        ids = set(session.scalars(select(Explanation.id)))
        events = set(session.scalars(select(AuditEvent.request_id)))
    assert ids == {o.id for o in good}  # the failed one left no explanation behind
    assert events == {"ok-0", "ok-1", "ok-2"}


def test_a_turn_takes_at_most_its_share_and_the_rest_take_theirs(stored):
    sessions, serving = stored
    cases = [waiting(serving, case(3)) for _ in range(7)]

    async def main():
        together = Together(sessions, anyio.CapacityLimiter(1), most=3)
        outcomes = await explained_together(together, cases)
        return together, outcomes

    together, outcomes = asyncio.run(main())
    assert all(isinstance(o, Explanation) for o in outcomes)
    assert (together.turns, together.cases) == (3, 7)  # 3 + 3 + 1


def test_a_request_cancelled_while_waiting_leaves_the_queue(stored):
    sessions, serving = stored

    async def main():
        together = Together(sessions, anyio.CapacityLimiter(1), most=32)
        async with together.hot_path:
            task = asyncio.ensure_future(together.explain(waiting(serving, case(3))))
            while not together.waiting:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
        return together

    together = asyncio.run(main())
    assert not together.waiting and together.turns == 0
    with sessions() as session:
        assert session.scalars(select(Explanation.id)).first() is None


def test_a_fault_in_a_turn_answers_every_case_it_took(stored):
    """A model pass that fails (a fault, not bad input) fails the cases it took, each with the
    error; no request is left waiting for an answer that never comes."""
    sessions, serving = stored

    class FailingPass:  # the real explainer's checks, then a fault in the model pass itself
        bounds = serving.explainer.bounds

        def explain_batch(self, cases, k):
            raise RuntimeError("the model pass failed")

    broken = dataclasses.replace(serving, explainer=FailingPass())
    cases = [waiting(broken, case(3)) for _ in range(3)]

    async def main():
        together = Together(sessions, anyio.CapacityLimiter(1), most=32)
        outcomes = await asyncio.wait_for(explained_together(together, cases), timeout=30)
        return together, outcomes

    together, outcomes = asyncio.run(main())
    assert [str(o) for o in outcomes] == ["the model pass failed"] * 3
    assert together.turns == 1 and not together.waiting
