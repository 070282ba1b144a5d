"""Explanations asked for at the same time share one model pass and one commit.

Every explanation request runs on the hot path (app.hot_path), at most one per usable core at
once. Under load the others wait for a turn; measured with sixteen clients, each explanation
then cost 1.5-1.7 times its one-client CPU (context switches, the GIL handed back and forth,
a commit each). Here a request puts its case in the app's queue before it waits, and the
request that gets a turn explains every case waiting then (up to
Settings.explain_together_max): one model pass (Explainer.explain_batch, which a single case
goes through too) and one transaction holding each explanation's row and audit event. A
request whose case was explained in another's turn answers without a turn of its own.

Each request keeps its own answer: a case refused (bad input, a segmentation the model was not
trained on) is refused alone, the others go on; when the shared commit fails, each explanation
is stored again alone, so one request's failure is never another's. Audit rows, metrics and
request-id logs stay per request. At one client a turn is one case: the work of before.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import anyio
import anyio.to_thread
import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from app import audit
from app.errors import InvalidInput
from app.explanations.service import (
    ExplanationInput,
    checked_case,
    explanation_row,
)
from app.serving import Serving
from app.tables import AuditEvent, Explanation
from model.inference import CaseExplanation, InputError


@dataclass(eq=False)  # each request's own: compared by identity
class Waiting:
    """One request's case, waiting to be explained."""

    read_case: Callable[[], ExplanationInput]  # decodes the request's body (CPU: in the turn)
    serving: Serving  # taken once per request: a version switch does not move it
    owner_id: int | None
    audit_event: Callable[[Explanation], AuditEvent] | None
    answer: asyncio.Future[Explanation] = field(init=False)
    taken: bool = field(default=False, init=False)  # by a turn: out of the queue for good


class Together:
    """The app's queue of cases waiting for the hot path, and the turns that explain them."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        hot_path: anyio.CapacityLimiter,
        most: int,
        on_turn: Callable[[int], object] = lambda cases: None,
    ):
        self.sessions, self.hot_path, self.most, self.on_turn = sessions, hot_path, most, on_turn
        self.waiting: deque[Waiting] = deque()
        self.turns = 0  # turns taken, and the cases they took: how much was shared (metrics)
        self.cases = 0

    async def explain(self, case: Waiting) -> Explanation:
        """The case explained and stored, in a turn of its own or of another request's."""
        case.answer = asyncio.get_running_loop().create_future()
        self.waiting.append(case)
        try:
            while not case.taken:
                async with self.hot_path:
                    if case.taken:  # in another request's turn: its answer comes from there
                        break
                    # Shielded: a turn takes other requests' cases, and answers them all.
                    with anyio.CancelScope(shield=True):
                        await self._turn()
            return await case.answer
        finally:
            if not case.answer.done():  # cancelled: nobody answers it now
                case.answer.cancel()
                if not case.taken:
                    self.waiting.remove(case)

    async def _turn(self) -> None:
        """Explains the cases waiting (the turn-taker's own among them, unless more than
        `most` wait ahead of it) and answers each."""
        taken = [self.waiting.popleft() for _ in range(min(self.most, len(self.waiting)))]
        for case in taken:
            case.taken = True
        self.turns, self.cases = self.turns + 1, self.cases + len(taken)
        self.on_turn(len(taken))
        try:
            outcomes = await anyio.to_thread.run_sync(explain_together, self.sessions, taken)
        except Exception as e:  # a fault of this code: every case taken gets it, none hangs
            outcomes = [e] * len(taken)
        for case, outcome in zip(taken, outcomes, strict=True):
            if case.answer.done():  # its request was cancelled meanwhile
                continue
            if isinstance(outcome, BaseException):
                case.answer.set_exception(outcome)
            else:
                case.answer.set_result(outcome)


Outcome = Explanation | Exception


def explain_together(sessions: sessionmaker[Session], cases: list[Waiting]) -> list[Outcome]:
    """Per case (in order), its stored explanation or the error that refused it: each case
    decoded and checked alone, the valid ones explained in one pass per (Serving, k), all of
    them stored in one transaction (or, when that fails, each in its own)."""
    outcomes: list[Outcome | None] = [None] * len(cases)
    groups: dict[tuple[int, int], list[tuple[int, ExplanationInput, Any]]] = {}
    for i, case in enumerate(cases):
        try:
            decoded = case.read_case()
            array, k = checked_case(case.serving, decoded)
        except Exception as e:  # this request's answer; the others go on
            outcomes[i] = e
            continue
        groups.setdefault((id(case.serving), k), []).append((i, decoded, array))

    rows: list[tuple[int, Explanation]] = []
    for (_, k), group in groups.items():
        serving = cases[group[0][0]].serving
        results = explain_each(serving, [array for _, _, array in group], k)
        for (i, decoded, array), result in zip(group, results, strict=True):
            if isinstance(result, InvalidInput):
                outcomes[i] = result
            else:
                row = explanation_row(serving, array, k, result, decoded, cases[i].owner_id)
                rows.append((i, row))

    def commit(part: list[tuple[int, Explanation]]) -> Exception | None:
        try:
            with sessions() as session:
                for i, row in part:
                    session.add(row)
                    if (event := cases[i].audit_event) is not None:
                        session.add(event(row))
                session.commit()
        except Exception as e:
            return e
        for i, row in part:
            outcomes[i] = row
        return None

    failed = commit(rows) if rows else None
    if failed is not None:
        if len(rows) == 1:
            outcomes[rows[0][0]] = failed
        else:  # each alone: one case's failure is not another's
            for one in rows:
                outcomes[one[0]] = commit([one]) or outcomes[one[0]]
    assert all(o is not None for o in outcomes)
    return outcomes  # type: ignore[return-value]


def explain_each(
    serving: Serving, arrays: list[np.ndarray], k: int
) -> list[CaseExplanation | InvalidInput]:
    """Per validated case (in order), its explanation from one model pass; should the pass
    refuse one of them, each is explained alone, so that only that one is refused."""
    try:
        return list(serving.explainer.explain_batch(arrays, k))
    except InputError:
        pass
    results: list[CaseExplanation | InvalidInput] = []
    for array in arrays:
        try:
            results.append(serving.explainer.explain(array, k=k))
        except InputError as e:
            results.append(InvalidInput(str(e)))
    return results


async def explain_for_request(
    request: Any,
    serving: Serving,
    read_case: Callable[[], ExplanationInput],
    owner_id: int,
) -> Explanation:
    """The case `read_case` decodes, explained by this Serving and stored with its audit event
    as this request's explanation (the API, the upload form and the example buttons all
    explain this way): on the hot path, together with the requests waiting beside it."""
    together: Together = request.app.state.explanations_together
    return await together.explain(
        Waiting(read_case, serving, owner_id, audit.explanation_created(request))
    )
