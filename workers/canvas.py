"""The cycle as a Celery canvas: a chord of venue fetches joined by compare-and-report."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from typing import Literal

from celery import chord
from celery.canvas import Signature

from app.cycle import AccountPlan
from workers.app import app

ResultShape = Literal["cycle", "report", "reports"]


def venue_groups(plans: Sequence[AccountPlan], batch_size: int) -> list[list[str]]:
    """Account ids grouped by venue endpoint (exchange and base URL), each group cut into
    batches of at most ``batch_size``: one chord header task per batch, whose accounts are
    fetched concurrently inside the task. The endpoints under most rate-budget pressure come
    first (they are published, so started, first), then by exchange and base URL."""
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    pressure: dict[tuple[str, str], float] = defaultdict(float)
    for plan in plans:
        key = (plan.exchange, plan.base_url)
        groups[key].append(plan.account_id)
        pressure[key] = max(pressure[key], plan.budget_pressure)
    batches: list[list[str]] = []
    for key in sorted(groups, key=lambda k: (-pressure[k], k)):
        ids = sorted(groups[key])
        batches.extend(ids[i : i + batch_size] for i in range(0, len(ids), batch_size))
    return batches


def cycle_chord(
    *,
    cycle_id: str,
    started_at: str,
    plans: Sequence[AccountPlan],
    skipped: Sequence[str],
    shape: ResultShape,
    batch_size: int,
) -> Signature:
    """``chord([fetch_venue(group) …], compare_and_report(…))`` for one cycle.

    No ``expires`` on any part: an expired header task is REVOKED, which would sink the
    chord (only the beat tick carries ``expires``).
    """
    header = [
        app.signature(
            "recon.fetch_venue",
            kwargs={"cycle_id": cycle_id, "account_ids": group},
            immutable=True,
        )
        for group in venue_groups(plans, batch_size)
    ]
    body = app.signature(
        "recon.compare_and_report",
        kwargs={
            "cycle_id": cycle_id,
            "started_at": started_at,
            "account_ids": [p.account_id for p in plans],
            "skipped": list(skipped),
            "shape": shape,
        },
    )
    return chord(header, body)


def confirm_chord(
    *,
    cycle_id: str,
    started_at: str,
    plans: Sequence[AccountPlan],
    account_ids: Sequence[str],
    skipped: Sequence[str],
    shape: ResultShape,
    batch_size: int,
    delay: float,
    retries_done: int = 0,
) -> Signature:
    """``chord([fetch_venue(flagged group) after delay …], confirm_breaks(…))``: the second
    look at a cycle's WARNING-or-worse breaks (``plans``: the flagged accounts). With
    ``retries_done``, the header tasks start as that many retries of an attempt already made
    (the join's), so the accounts get no more attempts than the retry policy allows."""
    header = [
        app.signature(
            "recon.fetch_venue",
            kwargs={"cycle_id": cycle_id, "account_ids": group},
            immutable=True,
            countdown=delay,
            retries=retries_done,
        )
        for group in venue_groups(plans, batch_size)
    ]
    body = app.signature(
        "recon.confirm_breaks",
        kwargs={
            "cycle_id": cycle_id,
            "started_at": started_at,
            "account_ids": list(account_ids),
            "skipped": list(skipped),
            "shape": shape,
        },
    )
    return chord(header, body)
