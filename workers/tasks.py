"""recon's Celery tasks (DESIGN §6). Each deserialises, calls plain functions of ``app``,
serialises: amounts cross the broker as decimal strings, results are the §5 JSON."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from celery import Task
from celery.canvas import Signature
from celery.utils.log import get_task_logger

from app import bootstrap
from app.cycle import (
    VenueOutcome,
    crash_trace,
    fetch_attempt,
    flagged_accounts,
    internal_error,
    observe_cycle,
    settle_attempt,
)
from app.cycle import compare_and_report as compare_accounts
from app.cycle import confirm_breaks as confirm_accounts
from app.outcomes import OutcomeJson, outcome_to_json, outcomes_from_json
from app.sync import sync_balances as sync_account_balances
from domain.report import Cycle, ErrorKind, FetchError, SourceError
from domain.serialization import cycle_to_json, format_timestamp, report_to_json
from infra.db.errors import AuditStoreError
from workers.app import app
from workers.canvas import ResultShape, confirm_chord, cycle_chord
from workers.payloads import (
    InvalidTaskPayload,
    check_arguments,
    require_choice,
    require_limit,
    require_text,
)
from workers.runtime import WorkerRuntime, get_runtime

log = get_task_logger(__name__)

#: Waits before the join retries a failed audit write (database unreachable), in seconds.
AUDIT_RETRY_DELAYS: Final = (1, 2, 5, 10, 30)
AUDIT_MAX_RETRIES: Final = 60
#: Results hold balances: their text in task events (what Flower shows) is cut to nothing;
#: callers read the whole result from the result backend.
RESULT_REPR_SIZE: Final = 0
#: Whether a join whose confirm delay has passed looks at its breaks again itself (else
#: always by a second chord, one header task per venue batch: the bench's naive baseline).
CONFIRM_IN_JOIN: bool = True
#: Namespace of the join ids of ticked cycles (see :func:`join_id`).
JOIN_NAMESPACE: Final = uuid.UUID("0e3b9f55-93c5-4f0e-8b7f-2c1d6a4e9b21")


class AccountBusy(RuntimeError):
    """Another running reconciliation holds the account (single flight)."""


def _lock_ttl(runtime: WorkerRuntime) -> float:
    """How long a cycle may hold its accounts before a crashed cycle stops blocking them."""
    return max(120.0, 5 * float(runtime.configuration.settings.interval_seconds))


def join_id(cycle_id: str) -> str:
    """The task id of a ticked cycle's join: derived, so a redelivered tick reuses it."""
    return str(uuid.uuid5(JOIN_NAMESPACE, cycle_id))


def _cycle_signature(
    task: Task[Any, Any], runtime: WorkerRuntime, account_ids: Sequence[str], shape: ResultShape
) -> tuple[str, Signature | None, tuple[str, ...]]:
    """Take the accounts' locks under this request's id (a redelivered request resumes the
    same cycle) and build the cycle's chord; None when every account is busy."""
    cycle_id = str(task.request.id)
    acquired = runtime.locks.acquire(account_ids, cycle_id, _lock_ttl(runtime))
    if acquired.busy:
        log.warning(
            "skipping accounts already being reconciled: cycle=%s accounts=%s",
            cycle_id,
            ",".join(acquired.busy),
        )
    if not acquired.held:
        return cycle_id, None, acquired.busy
    signature = cycle_chord(
        cycle_id=cycle_id,
        started_at=format_timestamp(runtime.context.clock()),
        plans=runtime.plans_for(acquired.held),
        skipped=acquired.busy,
        shape=shape,
        batch_size=runtime.configuration.settings.fetch_batch_size,
    )
    return cycle_id, signature, acquired.busy


def _start_cycle(
    task: Task[Any, Any], runtime: WorkerRuntime, account_ids: Sequence[str], shape: ResultShape
) -> Any:
    """Replace this task by the cycle's chord: the caller's AsyncResult receives the join's
    result, and no worker blocks on ``.get()``."""
    cycle_id, signature, busy = _cycle_signature(task, runtime, account_ids, shape)
    if signature is None:
        if shape != "cycle":
            raise AccountBusy(
                f"{', '.join(busy)}: a running reconciliation holds the account; "
                "try again when it ends"
            )
        now = runtime.context.clock()
        return {**cycle_to_json(Cycle(cycle_id, now, now, ())), "skipped": list(busy)}
    raise task.replace(signature)


@app.task(name="recon.tick", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def tick(self: Task[Any, Any]) -> dict[str, Any]:
    """Beat's tick: start a cycle over every account (skipping any a running cycle holds).

    Unlike the on-demand tasks, the tick launches its chord instead of replacing itself, so
    monitoring lists it under its own name; its result says which cycle it started, and the
    cycle itself is the result of the join (``join_id``).
    """
    runtime = get_runtime()
    if not runtime.configuration.settings.enabled:
        log.info("tick skipped: RECONCILIATION_ENABLED is false")
        return {"status": "disabled"}
    cycle_id, signature, busy = _cycle_signature(self, runtime, sorted(runtime.plans), "cycle")
    started = sorted(set(runtime.plans) - set(busy))
    if signature is not None:
        signature.apply_async(task_id=join_id(cycle_id))
    log.info("cycle started: cycle=%s accounts=%d skipped=%d", cycle_id, len(started), len(busy))
    return {
        "status": "started" if signature is not None else "all_busy",
        "cycle_id": cycle_id,
        "join_id": join_id(cycle_id) if signature is not None else None,
        "accounts": started,
        "skipped": list(busy),
    }


@app.task(name="recon.reconcile_all", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def reconcile_all(self: Task[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
    """On demand: every account; the result is the cycle."""
    check_arguments("recon.reconcile_all", kwargs, positional=args)
    runtime = get_runtime()
    return _start_cycle(self, runtime, sorted(runtime.plans), "cycle")


@app.task(name="recon.reconcile_account", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def reconcile_account(self: Task[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
    """On demand: one account; the result is its report."""
    name = "recon.reconcile_account"
    check_arguments(name, kwargs, required=("account_id",), positional=args)
    runtime = get_runtime()
    account_id = require_choice(name, "account_id", kwargs["account_id"], runtime.plans)
    return _start_cycle(self, runtime, [account_id], "report")


@app.task(name="recon.reconcile_exchange", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def reconcile_exchange(self: Task[Any, Any], /, *args: Any, **kwargs: Any) -> Any:
    """On demand: every account of one venue; the result is the list of their reports."""
    name = "recon.reconcile_exchange"
    check_arguments(name, kwargs, required=("exchange",), positional=args)
    runtime = get_runtime()
    exchanges = {plan.exchange for plan in runtime.plans.values()}
    exchange = require_choice(name, "exchange", kwargs["exchange"], exchanges)
    ids = sorted(a for a, plan in runtime.plans.items() if plan.exchange == exchange)
    return _start_cycle(self, runtime, ids, "reports")


@app.task(name="recon.get_history", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def get_history(self: Task[Any, Any], /, *args: Any, **kwargs: Any) -> list[dict[str, Any]]:
    """Past reports from the audit store, newest first."""
    name = "recon.get_history"
    check_arguments(name, kwargs, optional=("account_id", "exchange", "limit"), positional=args)
    account_id = kwargs.get("account_id")
    exchange = kwargs.get("exchange")
    if account_id is not None:
        require_text(name, "account_id", account_id)
    if exchange is not None:
        require_text(name, "exchange", exchange)
    if account_id is not None and exchange is not None:
        raise InvalidTaskPayload(f"{name}: give 'account_id' or 'exchange', not both")
    limit = require_limit(name, "limit", kwargs.get("limit", 50))
    audit = get_runtime().context.audit
    history = getattr(audit, "history", None)
    if history is None:
        raise RuntimeError("the audit store cannot read history")
    reports = history(account_id=account_id, exchange=exchange, limit=limit)
    return [report_to_json(r) for r in reports]


def _require_string(task: str, name: str, value: object) -> str:
    """A string argument, possibly empty (the sync refuses, and records, an empty one)."""
    if not isinstance(value, str):
        raise InvalidTaskPayload(
            f"{task}: argument {name!r} must be a string, not {type(value).__name__}"
        )
    return value


@app.task(name="recon.sync_balances", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE)
def sync_balances(self: Task[Any, Any], /, *args: Any, **kwargs: Any) -> dict[str, object]:
    """Write one account's venue balances into the book, for an authorised operator (§5).

    The result is the outcome: ``synced``, ``refused`` (a normal result, recorded) or
    ``failed``. The token is never logged, stored or echoed in an error.
    """
    name = "recon.sync_balances"
    check_arguments(
        name, kwargs, required=("account_id", "operator", "token", "reason"), positional=args
    )
    runtime = get_runtime()
    account_id = require_choice(name, "account_id", kwargs["account_id"], runtime.plans)
    operator = require_text(name, "operator", kwargs["operator"])
    token = _require_string(name, "token", kwargs["token"])
    reason = _require_string(name, "reason", kwargs["reason"])
    settings = runtime.configuration.settings
    with bootstrap.open_operator_log(settings) as action_log:
        return sync_account_balances(
            account_id=account_id,
            operator=operator,
            token=token,
            reason=reason,
            tokens=settings.operator_token_table(),
            plan=runtime.plans[account_id],
            book=runtime.context.book,
            log=action_log,
            retry=runtime.context.retry,
            clock=runtime.context.clock,
        )


@app.task(
    name="recon.fetch_venue", bind=True, resultrepr_maxsize=RESULT_REPR_SIZE, max_retries=None
)
def fetch_venue(
    self: Task[Any, Any],
    *,
    cycle_id: str,
    account_ids: list[str],
    done: dict[str, OutcomeJson] | None = None,
) -> dict[str, OutcomeJson]:
    """Chord header: one attempt per pending account; transient failures are retried by
    Celery on the shared retry policy; once an account's retries are spent its outcome is
    its error. Always returns, so one venue down never sinks the chord."""
    runtime = get_runtime()
    outcomes: dict[str, OutcomeJson] = dict(done or {})
    pending = [a for a in account_ids if a not in outcomes]
    try:
        results = fetch_attempt(runtime.plans_for(pending), pool=runtime.context.fetch_pool)
    except Exception as error:  # noqa: BLE001 - a bug must not sink the chord: per account
        log.error("venue fetch crashed: cycle=%s error=%s", cycle_id, crash_trace(error))
        crash = internal_error(error)
        results = {a: SourceError(crash.message, crash.kind) for a in pending}
    settled, retry_in = settle_attempt(
        results, runtime.context.retry, attempt=self.request.retries + 1, cycle_id=cycle_id
    )
    outcomes.update((account_id, outcome_to_json(o)) for account_id, o in settled.items())
    if retry_in:
        # The retry carries the outcomes already known; its kwargsrepr (what Flower and the
        # logs show) leaves them out, as they hold balances.
        options: dict[str, Any] = {
            "kwargsrepr": repr({"cycle_id": cycle_id, "account_ids": account_ids})
        }
        raise self.retry(
            kwargs={"cycle_id": cycle_id, "account_ids": account_ids, "done": outcomes},
            countdown=max(retry_in.values()),
            **options,
        )
    return outcomes


def _merge(results: Sequence[Mapping[str, OutcomeJson]]) -> dict[str, VenueOutcome]:
    merged: dict[str, VenueOutcome] = {}
    for part in results:
        merged.update(outcomes_from_json(part))
    return merged


@app.task(
    name="recon.compare_and_report",
    bind=True,
    resultrepr_maxsize=RESULT_REPR_SIZE,
    max_retries=AUDIT_MAX_RETRIES,
)
def compare_and_report(
    self: Task[Any, Any],
    results: list[dict[str, OutcomeJson]],
    *,
    cycle_id: str,
    started_at: str,
    account_ids: list[str],
    skipped: list[str],
    shape: ResultShape,
) -> Any:
    """Chord join: compare every account, write the cycle's audit rows in one transaction,
    confirm the WARNING-or-worse breaks, release the accounts, return the cycle (or the
    report, or the reports)."""
    joined_at = time.monotonic()
    runtime = _join_runtime(self, cycle_id)
    outcomes = _merge(results)
    missing = [a for a in account_ids if a not in outcomes]
    for account_id in missing:  # never read an absent outcome as a zero balance
        outcomes[account_id] = FetchError(
            ErrorKind.UNAVAILABLE, "no venue outcome reached the join"
        )
    try:
        cycle = compare_accounts(
            cycle_id=cycle_id,
            started_at=datetime.fromisoformat(started_at).astimezone(UTC),
            plans=runtime.plans_for(account_ids),
            outcomes=outcomes,
            context=runtime.context,
        )
    except AuditStoreError as error:
        raise _retry_audit(self, cycle_id, error) from None
    flagged = flagged_accounts(cycle)
    if not flagged:
        return _finish(runtime, cycle, account_ids, skipped, shape)
    # The second look, at least the confirm delay after the first fetches ended (they ended
    # before this join began). A delay still to run: a second chord after it, so no worker
    # waits through the delay; none left: one attempt per account here, saving a chord's
    # round trip, and a second chord only for the accounts whose attempt must be retried.
    # Either way the caller's AsyncResult receives the cycle with its confirmations.
    join = _JoinArguments(cycle_id, started_at, account_ids, skipped, shape)
    remaining = runtime.context.confirm_delay - (time.monotonic() - joined_at)
    if remaining > 0 or not CONFIRM_IN_JOIN:
        raise self.replace(_confirm_chord(runtime, join, flagged, max(0.0, remaining)))
    try:
        cycle, retry_in = _confirm_here(runtime, cycle, flagged)
    except AuditStoreError as error:
        raise _retry_audit(self, cycle_id, error) from None
    if retry_in:
        # The attempt here was the first: the chord's fetches are its retries.
        pending = sorted(retry_in)
        countdown = max(retry_in.values())
        raise self.replace(_confirm_chord(runtime, join, pending, countdown, retries_done=1))
    return _finish(runtime, cycle, account_ids, skipped, shape)


def _confirm_here(
    runtime: WorkerRuntime, cycle: Cycle, flagged: Sequence[str]
) -> tuple[Cycle, dict[str, float]]:
    """One attempt per flagged account on the process's fetch threads (no retry sleeps here:
    a join must end well within the broker's redelivery time). The verdicts of the accounts
    whose attempt settled it (balances, or a permanent error) are recorded; the others are
    returned with their wait before the first retry."""
    context = runtime.context
    results = fetch_attempt(runtime.plans_for(flagged), pool=context.fetch_pool)
    outcomes, retry_in = settle_attempt(
        results, context.retry, attempt=1, cycle_id=cycle.cycle_id, what="confirming re-fetch"
    )
    cycle = confirm_accounts(
        cycle=cycle, plans=runtime.plans_for(sorted(outcomes)), outcomes=outcomes, context=context
    )
    return cycle, retry_in


@dataclass(frozen=True, slots=True)
class _JoinArguments:
    """What a join was called with, for the second chord it may be replaced by."""

    cycle_id: str
    started_at: str
    account_ids: list[str]
    skipped: list[str]
    shape: ResultShape


def _confirm_chord(
    runtime: WorkerRuntime,
    join: _JoinArguments,
    accounts: Sequence[str],
    delay: float,
    *,
    retries_done: int = 0,
) -> Signature:
    """The second chord: ``accounts`` fetched again after ``delay``, joined by
    ``recon.confirm_breaks``; ``retries_done`` attempts already made count against their
    retries."""
    return confirm_chord(
        cycle_id=join.cycle_id,
        started_at=join.started_at,
        plans=runtime.plans_for(accounts),
        account_ids=join.account_ids,
        skipped=join.skipped,
        shape=join.shape,
        batch_size=runtime.configuration.settings.fetch_batch_size,
        delay=delay,
        retries_done=retries_done,
    )


@app.task(
    name="recon.confirm_breaks",
    bind=True,
    resultrepr_maxsize=RESULT_REPR_SIZE,
    max_retries=AUDIT_MAX_RETRIES,
)
def confirm_breaks(
    self: Task[Any, Any],
    results: list[dict[str, OutcomeJson]],
    *,
    cycle_id: str,
    started_at: str,
    account_ids: list[str],
    skipped: list[str],
    shape: ResultShape,
) -> Any:
    """Join of the confirming re-fetch: judge each break again, record the verdicts in the
    rows' recovery columns, release the accounts, return the confirmed cycle."""
    runtime = _join_runtime(self, cycle_id)
    try:
        recorded = {r.account_id: r for r in runtime.context.audit.cycle_reports(cycle_id)}
        cycle = Cycle(
            cycle_id,
            datetime.fromisoformat(started_at).astimezone(UTC),
            runtime.context.clock(),
            tuple(recorded[a] for a in account_ids if a in recorded),
        )
        cycle = confirm_accounts(
            cycle=cycle,
            plans=runtime.plans_for(account_ids),
            outcomes=_merge(results),
            context=runtime.context,
        )
    except AuditStoreError as error:
        raise _retry_audit(self, cycle_id, error) from None
    return _finish(runtime, cycle, account_ids, skipped, shape)


def _join_runtime(task: Task[Any, Any], cycle_id: str) -> WorkerRuntime:
    """The process's runtime for a join. Building it opens the audit store: a database that
    is unreachable then (the join is this worker's first task) is retried like a failed
    write, never a lost cycle."""
    try:
        return get_runtime()
    except AuditStoreError as error:
        raise _retry_audit(task, cycle_id, error) from None


def _retry_audit(task: Task[Any, Any], cycle_id: str, error: AuditStoreError) -> Exception:
    """A retry of the join after a failed audit write (database unreachable)."""
    delays = AUDIT_RETRY_DELAYS
    countdown = delays[min(task.request.retries, len(delays) - 1)]
    log.error(
        "audit write failed, will retry: cycle=%s in_s=%d error=%s", cycle_id, countdown, error
    )
    return task.retry(exc=error, countdown=countdown)


def _finish(
    runtime: WorkerRuntime,
    cycle: Cycle,
    account_ids: Sequence[str],
    skipped: Sequence[str],
    shape: ResultShape,
) -> Any:
    """Release the accounts, count the cycle, shape the result."""
    runtime.locks.release(account_ids, cycle.cycle_id)
    observe_cycle(runtime.context, cycle)
    if shape == "report":
        return report_to_json(cycle.reports[0])
    if shape == "reports":
        return [report_to_json(r) for r in cycle.reports]
    return {**cycle_to_json(cycle), "skipped": list(skipped)}
