"""One reconciliation cycle: fetch every venue account, read the book, compare, audit.

The in-process path (``recon reconcile``) calls :func:`run_cycle`; the Celery workers call the
same two halves separately: :func:`fetch_venue` in the chord's header and
:func:`compare_and_report` in its join. So both paths share one comparison, one audit write and
one retry policy.
"""

from __future__ import annotations

import logging
import time
import traceback
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from app.ports import AuditWriter, BookSource, PriceSource
from domain.assets import to_book_codes
from domain.confirmation import confirm, needs_confirmation, with_recovery
from domain.policy import Policy
from domain.reconcile import reconcile_account
from domain.report import Cycle, ErrorKind, FetchError, Report, SourceError
from infra.venues.base import VenueClient
from infra.venues.retry import RetryPolicy, call_with_retry

log = logging.getLogger(__name__)

#: Fixed namespace so that a report's id derives from (cycle, account): a redelivered
#: request resumes the same cycle and writes the same ids, which the audit store ignores.
RECONCILIATION_NAMESPACE = uuid.UUID("5b0f4c1e-8f7a-4c53-9a51-0d6c2a7e4f10")

VenueOutcome = Mapping[str, Decimal] | FetchError
Clock = Callable[[], datetime]


def reconciliation_id(cycle_id: str, account_id: str) -> str:
    """The report id of ``account_id`` in ``cycle_id``: stable across redeliveries."""
    return str(uuid.uuid5(RECONCILIATION_NAMESPACE, f"{cycle_id}\x1f{account_id}"))


@dataclass(frozen=True, slots=True)
class AccountPlan:
    """Everything needed to fetch one venue account (built by the composition root)."""

    account_id: str
    exchange: str
    client: VenueClient
    asset_map: Mapping[str, str] = field(default_factory=dict)
    #: ``scheme://host[:port]`` the client talks to: with the venue, the scope that
    #: accounts share (a venue endpoint, and for IP-limited venues one rate budget).
    base_url: str = ""
    #: How much of its rate budget's burst a cycle needs (``bootstrap.budget_pressures``):
    #: the endpoints under most pressure are fetched first.
    budget_pressure: float = 0.0


CycleObserver = Callable[["Cycle"], None]


@dataclass(frozen=True, slots=True)
class CycleContext:
    """The adapters and policy a cycle runs with."""

    book: BookSource
    prices: PriceSource
    policy: Policy
    audit: AuditWriter
    retry: RetryPolicy
    clock: Clock
    #: Called with every cycle once its rows are written (metrics); never raises into it.
    observers: tuple[CycleObserver, ...] = ()
    #: Wait before the confirming re-fetch of a WARNING-or-worse break (seconds).
    confirm_delay: float = 0.0
    #: The process's shared fetch threads, sized to its HTTP connection pool.
    fetch_pool: Executor | None = None
    sleep: Callable[[float], None] = time.sleep


def fetch_venue(plan: AccountPlan, retry: RetryPolicy) -> VenueOutcome:
    """One account's venue balances in book codes, or the error that ended its retries."""

    def on_retry(attempt: int, error: SourceError, delay: float) -> None:
        log.warning(
            "venue fetch failed, retrying: account=%s exchange=%s attempt=%d kind=%s "
            "delay_s=%.3f error=%s",
            plan.account_id,
            plan.exchange,
            attempt,
            error.kind.value,
            delay,
            error.message,
        )

    try:
        balances = call_with_retry(plan.client.fetch_balances, retry, on_retry=on_retry)
    except SourceError as error:
        log.error(
            "venue fetch gave up: account=%s exchange=%s kind=%s error=%s",
            plan.account_id,
            plan.exchange,
            error.kind.value,
            error.message,
        )
        return error.to_fetch_error()
    return to_book_codes(balances, plan.asset_map)


def crash_trace(error: BaseException) -> str:
    """A bug's type and where it happened, for a log line: never its message, which might
    quote a balance (a parsing bug's ValueError) or a secret."""
    frames = "".join(traceback.format_tb(error.__traceback__)).rstrip()
    return f"{type(error).__name__}\n{frames}"


def _log_crash(plan: AccountPlan, error: BaseException) -> None:
    log.error(
        "venue fetch crashed: account=%s exchange=%s error=%s",
        plan.account_id,
        plan.exchange,
        crash_trace(error),
    )


def _fetch_guarded(plan: AccountPlan, retry: RetryPolicy) -> VenueOutcome:
    """:func:`fetch_venue`, a bug included: it becomes the account's error, so one client's
    bug never sinks the other accounts or the cycle."""
    try:
        return fetch_venue(plan, retry)
    except Exception as error:  # noqa: BLE001 - logged (without its message) by _log_crash
        _log_crash(plan, error)
        return internal_error(error)


def _read_book(book: BookSource, account_id: str) -> VenueOutcome:
    try:
        return book.balances(account_id)
    except SourceError as error:
        log.error("book read failed: account=%s kind=%s error=%s", account_id, error.kind, error)
        return error.to_fetch_error()


def _compare_accounts(
    *,
    cycle_id: str,
    accounts: Sequence[tuple[str, str, str]],
    outcomes: Mapping[str, VenueOutcome],
    context: CycleContext,
) -> list[Report]:
    """Read the book for each ``(reconciliation_id, account_id, exchange)``, price the assets
    in play once, and compare each account's venue outcome with its book."""
    locals_by_account = {account: _read_book(context.book, account) for _, account, _ in accounts}
    assets: set[str] = set()
    for side in (*locals_by_account.values(), *(outcomes[a] for _, a, _ in accounts)):
        if not isinstance(side, FetchError):
            assets.update(side)
    prices = context.prices.prices_for(sorted(assets))
    return [
        reconcile_account(
            reconciliation_id=report_id,
            cycle_id=cycle_id,
            account_id=account,
            exchange=exchange,
            reconciled_at=context.clock(),
            local=locals_by_account[account],
            venue=outcomes[account],
            policy=context.policy,
            prices=prices,
        )
        for report_id, account, exchange in accounts
    ]


def observe_cycle(context: CycleContext, cycle: Cycle) -> None:
    """Hand a finished cycle to the observers (metrics); an observer's failure is logged."""
    for observe in context.observers:
        try:
            observe(cycle)
        except Exception:  # an observer (metrics) must never fail a written cycle
            log.exception("cycle observer failed: cycle=%s", cycle.cycle_id)


def flagged_accounts(cycle: Cycle) -> list[str]:
    """Accounts whose report needs a confirming re-fetch (WARNING-or-worse findings)."""
    return [r.account_id for r in cycle.reports if needs_confirmation(r)]


def confirm_breaks(
    *,
    cycle: Cycle,
    plans: Sequence[AccountPlan],
    outcomes: Mapping[str, VenueOutcome],
    context: CycleContext,
) -> Cycle:
    """The second look: compare the re-fetched venue ``outcomes`` with the book read again,
    record each verdict in the row's recovery columns, and return the cycle carrying them.

    A re-fetch that failed confirms the break (FAILED, its error in the details)."""
    by_id = {plan.account_id: plan for plan in plans}
    flagged = [r for r in cycle.reports if needs_confirmation(r) and r.account_id in outcomes]
    if not flagged:
        return cycle
    seconds = _compare_accounts(
        cycle_id=cycle.cycle_id,
        accounts=[
            (r.reconciliation_id, r.account_id, by_id[r.account_id].exchange) for r in flagged
        ],
        outcomes=outcomes,
        context=context,
    )
    confirmed: dict[str, Report] = {}
    for report, second in zip(flagged, seconds, strict=True):
        recovery = confirm(report, second, context.clock())
        confirmed[report.account_id] = with_recovery(report, recovery)
        log.info(
            "confirmation: cycle=%s account=%s recovery=%s",
            cycle.cycle_id,
            report.account_id,
            recovery.status.value,
        )
    context.audit.record_recoveries(list(confirmed.values()))
    reports = tuple(confirmed.get(r.account_id, r) for r in cycle.reports)
    return Cycle(cycle.cycle_id, cycle.started_at, context.clock(), reports)


def compare_and_report(
    *,
    cycle_id: str,
    started_at: datetime,
    plans: Sequence[AccountPlan],
    outcomes: Mapping[str, VenueOutcome],
    context: CycleContext,
) -> Cycle:
    """Compare every account's venue outcome with its book, write the cycle's audit rows.

    All rows of the cycle are written in one transaction; a failure of the audit store
    propagates and leaves nothing written. Writing is idempotent on the report ids.
    """
    reports = _compare_accounts(
        cycle_id=cycle_id,
        accounts=[
            (reconciliation_id(cycle_id, p.account_id), p.account_id, p.exchange) for p in plans
        ],
        outcomes=outcomes,
        context=context,
    )
    written = context.audit.record_cycle(reports)
    if written < len(reports):
        # A resumed cycle (a redelivered or retried join): its rows were written before, and
        # they are the cycle's facts, whatever this second comparison found (the book may
        # have changed meanwhile). The confirmation and the result go by them.
        recorded = {r.account_id: r for r in context.audit.cycle_reports(cycle_id)}
        reports = [recorded.get(r.account_id, r) for r in reports]
    cycle = Cycle(cycle_id, started_at, context.clock(), tuple(reports))
    log.info(
        "cycle finished: cycle=%s accounts=%d status=%s",
        cycle_id,
        len(reports),
        cycle.status.value,
    )
    return cycle


ProgressCallback = Callable[[str, VenueOutcome], None]
AttemptResult = Mapping[str, Decimal] | SourceError


def fetch_attempt(
    plans: Sequence[AccountPlan], *, pool: Executor | None = None, max_concurrency: int = 32
) -> dict[str, AttemptResult]:
    """One attempt per account, concurrently: balances in book codes, or the venue's error
    (a bug: a permanent error naming only its type).

    The Celery header calls this once per (re)try, so retrying stays Celery's single layer.
    ``pool`` is the process's shared fetch pool: however many header tasks run at once, the
    process never has more requests in flight than its HTTP connection pool holds (measured:
    512 threads on 64 connections gave ReadErrors and 10 s timeouts; 64 gave none).
    """
    if not plans:
        return {}

    def attempt(plan: AccountPlan) -> AttemptResult:
        try:
            return to_book_codes(plan.client.fetch_balances(), plan.asset_map)
        except SourceError as error:
            return error
        except Exception as error:  # noqa: BLE001 - a bug: this account's error, logged
            _log_crash(plan, error)
            crash = internal_error(error)
            return SourceError(crash.message, crash.kind)

    if pool is not None:
        results = list(pool.map(attempt, plans))
    else:
        with ThreadPoolExecutor(max_workers=min(max_concurrency, len(plans))) as local:
            results = list(local.map(attempt, plans))
    return {plan.account_id: result for plan, result in zip(plans, results, strict=True)}


def settle_attempt(
    results: Mapping[str, AttemptResult],
    retry: RetryPolicy,
    *,
    attempt: int,
    cycle_id: str,
    what: str = "venue fetch",
) -> tuple[dict[str, VenueOutcome], dict[str, float]]:
    """Sort one attempt's ``results`` (attempt number ``attempt``) on the retry policy: the
    outcomes it settled (balances, or the error that ends an account's retries) and the
    accounts to try again, each with its wait. Every failure is logged (``what`` names the
    fetch), never with an amount."""
    settled: dict[str, VenueOutcome] = {}
    retry_in: dict[str, float] = {}
    for account_id, result in results.items():
        if not isinstance(result, SourceError):
            settled[account_id] = result
            continue
        delay = retry.delay_before_retry(attempt, result)
        log.warning(
            "%s failed: cycle=%s account=%s attempt=%d kind=%s error=%s%s",
            what,
            cycle_id,
            account_id,
            attempt,
            result.kind.value,
            result.message,
            "" if delay is None else f" retry_in_s={delay:.3f}",
        )
        if delay is None:
            settled[account_id] = result.to_fetch_error()
        else:
            retry_in[account_id] = delay
    return settled, retry_in


def fetch_all(
    plans: Sequence[AccountPlan],
    retry: RetryPolicy,
    *,
    max_concurrency: int = 32,
    on_fetched: ProgressCallback | None = None,
) -> dict[str, VenueOutcome]:
    """Fetch every account concurrently (threads over the shared HTTP clients), each with its
    retries, a bug being that account's error."""
    if not plans:
        return {}
    outcomes: dict[str, VenueOutcome] = {}
    with ThreadPoolExecutor(max_workers=min(max_concurrency, len(plans))) as pool:
        futures = {pool.submit(_fetch_guarded, plan, retry): plan for plan in plans}
        for future in as_completed(futures):
            plan = futures[future]
            outcome = future.result()
            outcomes[plan.account_id] = outcome
            if on_fetched is not None:
                on_fetched(plan.account_id, outcome)
    return outcomes


def run_cycle(
    *,
    cycle_id: str,
    plans: Sequence[AccountPlan],
    context: CycleContext,
    max_concurrency: int = 32,
    on_fetched: ProgressCallback | None = None,
) -> Cycle:
    """A whole cycle in this process: concurrent fetches, compare-and-report, then the
    confirming re-fetch of the accounts with WARNING-or-worse breaks."""
    started_at = context.clock()
    outcomes = fetch_all(
        plans, context.retry, max_concurrency=max_concurrency, on_fetched=on_fetched
    )
    cycle = compare_and_report(
        cycle_id=cycle_id, started_at=started_at, plans=plans, outcomes=outcomes, context=context
    )
    if flagged_accounts(cycle):
        context.sleep(context.confirm_delay)
        cycle = confirm_in_process(
            cycle=cycle, plans=plans, context=context, max_concurrency=max_concurrency
        )
    observe_cycle(context, cycle)
    return cycle


def internal_error(error: BaseException) -> FetchError:
    """What a bug while fetching an account becomes: that account's error (never a zero)."""
    return FetchError(ErrorKind.UNAVAILABLE, f"internal error ({type(error).__name__})")


def confirm_in_process(
    *,
    cycle: Cycle,
    plans: Sequence[AccountPlan],
    context: CycleContext,
    max_concurrency: int = 32,
) -> Cycle:
    """The second look in this process (``recon reconcile``), once the confirm delay has
    passed: re-fetch the cycle's flagged accounts, each with its retries, judge their breaks
    again and record the verdicts (:func:`confirm_breaks`). A bug while re-fetching an
    account is its error, which confirms its break: the written cycle is never lost to it."""
    flagged = flagged_accounts(cycle)
    if not flagged:
        return cycle
    wanted = set(flagged)
    again = [plan for plan in plans if plan.account_id in wanted]
    outcomes = fetch_all(again, context.retry, max_concurrency=max_concurrency)
    return confirm_breaks(cycle=cycle, plans=plans, outcomes=outcomes, context=context)
