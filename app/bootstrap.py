"""The composition root: the only place that turns settings and the roster into adapters.

Nothing is built at import time; each CLI command (and, later, each worker process) calls
these functions once.
"""

from __future__ import annotations

import logging
import socket
import sys
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Final

import httpx

from app.alerts import publish_cycle_alerts
from app.cycle import AccountPlan, CycleContext, CycleObserver
from app.ports import BookSource, PriceSource
from domain.report import Cycle, Status
from infra.alerts import WebhookAlerts
from infra.book.file_book import FileBook
from infra.book.http_book import HttpBook
from infra.book.sql_book import SqlBook
from infra.config import (
    AccountConfig,
    ConfigError,
    FileBookConfig,
    HttpBookConfig,
    Roster,
    SecretRef,
    Settings,
    builtin_roster_path,
    load_roster,
    load_settings,
)
from infra.db.engine import create_audit_engine
from infra.db.migrate import ensure_schema, upgrade
from infra.db.operator_actions import OperatorActionLog
from infra.db.repository import AuditRepository
from infra.prices.coinbase import CoinbasePrices
from infra.prices.static import StaticPrices
from infra.sandbox import SandboxServer, builtin_scenario_path, serve
from infra.venues import binance, coinbase, dydx, kraken
from infra.venues.base import VenueClient
from infra.venues.binance import BinanceClient, BinanceKeyError
from infra.venues.ccxt_venue import CcxtClient, CcxtUnavailable
from infra.venues.coinbase import CoinbaseClient, CoinbaseKeyError
from infra.venues.dydx import DydxClient
from infra.venues.kraken import KrakenClient, KrakenKeyError
from infra.venues.pacing import (
    LocalRateBudget,
    Pacer,
    RateBudget,
    RateLimit,
    RedisRateBudget,
    ip_scope,
    key_scope,
)
from infra.venues.retry import RetryPolicy

log = logging.getLogger(__name__)

#: The port the built-in roster's accounts point at (``recon sandbox`` serves it by default).
SANDBOX_PORT: Final = 9000
SANDBOX_HOST: Final = "127.0.0.1"
#: Concurrent connections of the shared HTTP client: one per in-flight venue request.
HTTP_MAX_CONNECTIONS: Final = 64
SUPPORTED_EXCHANGES: Final = ("coinbase", "dydx", "kraken", "binance", "ccxt:<id>")
#: Each venue's public API, used when an account sets no ``base_url``.
DEFAULT_BASE_URLS: Final = {
    "coinbase": "https://api.coinbase.com",
    "dydx": "https://indexer.dydx.trade",
    "kraken": "https://api.kraken.com",
    "binance": "https://api.binance.com",
}


def utc_now() -> datetime:
    """The clock every cycle reads (UTC, timezone-aware)."""
    return datetime.now(UTC)


@dataclass(frozen=True, slots=True)
class Configuration:
    """Settings and roster, validated before any work."""

    settings: Settings
    roster: Roster

    @property
    def uses_builtin_roster(self) -> bool:
        return self.settings.accounts_file is None


def load_configuration(environ: Mapping[str, str]) -> Configuration:
    """Settings from ``environ`` and the roster they name; ConfigError on any problem."""
    settings = load_settings(environ)
    roster = load_roster(settings.accounts_path, settings)
    return Configuration(settings, roster)


def configure_logging(settings: Settings) -> None:
    """Logs go to standard error at the configured level."""
    logging.basicConfig(
        stream=sys.stderr,
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    # Libraries chatty at INFO (every request URL, every migration step, the embedded
    # sandbox's start and stop) speak only at WARNING unless recon itself runs at DEBUG.
    quiet = max(logging.WARNING, logging.getLogger().level)
    if logging.getLogger().level > logging.DEBUG:
        for name in ("httpx", "alembic", "uvicorn", "uvicorn.error", "uvicorn.access", "kombu"):
            logging.getLogger(name).setLevel(quiet)


def select_accounts(
    roster: Roster, *, account_ids: Sequence[str] = (), exchange: str | None = None
) -> tuple[AccountConfig, ...]:
    """The accounts chosen on the command line (all by default); unknown names refused."""
    if account_ids:
        known = {a.id for a in roster.accounts}
        unknown = [i for i in account_ids if i not in known]
        if unknown:
            raise ConfigError(f"{roster.source}: no account named {', '.join(map(repr, unknown))}")
        return tuple(a for a in roster.accounts if a.id in set(account_ids))
    if exchange is not None:
        chosen = tuple(a for a in roster.accounts if a.exchange == exchange)
        if not chosen:
            raise ConfigError(f"{roster.source}: no account on exchange {exchange!r}")
        return chosen
    return roster.accounts


def _resolve(roster: Roster, ref: SecretRef, environ: Mapping[str, str], where: str) -> str:
    """The secret behind ``ref``; a ConfigError names the file, the account and the field."""
    try:
        return roster.resolve_secret(ref, environ)
    except ConfigError as error:
        raise ConfigError(f"{where}: {error}") from None


def base_url_of(account: AccountConfig) -> str:
    """The endpoint ``account`` is read from: its own ``base_url`` or the venue's public one."""
    return account.base_url or DEFAULT_BASE_URLS.get(account.exchange, "")


@dataclass(frozen=True, slots=True)
class VenuePacing:
    """A venue's published limit, what it counts per (``key`` or ``ip``), and the cost of
    recon's one call in the limit's unit (Binance counts weight)."""

    limit: RateLimit
    scope: str
    cost: int = 1


VENUE_PACING: Final[Mapping[str, VenuePacing]] = {
    "coinbase": VenuePacing(coinbase.PUBLISHED_LIMIT, coinbase.LIMIT_SCOPE),
    "dydx": VenuePacing(dydx.PUBLISHED_LIMIT, dydx.LIMIT_SCOPE),
    "kraken": VenuePacing(kraken.PUBLISHED_LIMIT, kraken.LIMIT_SCOPE),
    "binance": VenuePacing(binance.PUBLISHED_LIMIT, binance.LIMIT_SCOPE, binance.ACCOUNT_WEIGHT),
}


def build_rate_budget(settings: Settings) -> RateBudget:
    """Where the venues' rate budgets live: Redis when the broker is Redis (shared by every
    worker and machine, and by ``recon reconcile`` beside them), else this process."""
    broker = settings.broker_url
    if broker is not None and str(broker).startswith(("redis://", "rediss://")):
        return RedisRateBudget.from_url(str(broker))
    return LocalRateBudget()


def binance_weight_limit(account: AccountConfig) -> int:
    """The request weight a minute Binance's in-process guard allows at ``account``'s
    ``base_url``: the published 6,000, or the account's own tier (roster ``rate_limit``)."""
    if account.rate_limit is None:
        return binance.DEFAULT_WEIGHT_LIMIT
    per_minute = account.rate_limit.per_second * 60
    return max(binance.ACCOUNT_WEIGHT, int(per_minute))


def check_shared_budgets(roster: Roster) -> None:
    """Accounts that share a per-IP budget (one venue, one ``base_url``) must agree on its
    ``rate_limit``: one budget has one limit. ConfigError names the file and both accounts."""
    seen: dict[str, AccountConfig] = {}
    for account in roster.accounts:
        pacing = VENUE_PACING.get(account.exchange)
        if pacing is None or pacing.scope != "ip":
            continue
        scope = ip_scope(account.exchange, base_url_of(account))
        first = seen.setdefault(scope, account)
        if first.rate_limit != account.rate_limit:
            raise ConfigError(
                f"{roster.source}: account {account.id!r}: field 'rate_limit': differs from "
                f"account {first.id!r}'s, but {account.exchange} counts its limit per client IP: "
                f"every account at {base_url_of(account)} shares one budget"
            )


def account_limit(account: AccountConfig, pacing: VenuePacing) -> RateLimit:
    """The limit of ``account``'s budget: its venue's published one, or the account's own
    tier (roster ``rate_limit``, in the venue's unit)."""
    if account.rate_limit is None:
        return pacing.limit
    return RateLimit.in_requests(
        pacing.limit.model,
        per_second=account.rate_limit.per_second,
        burst=account.rate_limit.burst,
        cost=pacing.cost,
    )


def budget_pressures(accounts: Sequence[AccountConfig]) -> dict[str, float]:
    """Account id → how much of its rate budget's burst one cycle of ``accounts`` needs: the
    requests of its scope (every account at one ``base_url`` for a per-IP venue, its own for
    a per-key one) ÷ the requests the budget lets go at once. 0 for an unpaced venue (ccxt).

    The chord header starts the endpoints under most pressure first: their windows then open
    earliest, so the confirming second look of an endpoint whose first look filled its
    window waits least for the next one. An estimate, for that order only: one request per
    account (a paginated venue may need more), accounts of a per-key venue counted apart
    even when they share a key."""
    shared: Counter[str] = Counter()
    for account in accounts:
        pacing = VENUE_PACING.get(account.exchange)
        if pacing is not None and pacing.scope == "ip":
            shared[ip_scope(account.exchange, base_url_of(account))] += 1
    pressures: dict[str, float] = {}
    for account in accounts:
        pacing = VENUE_PACING.get(account.exchange)
        if pacing is None:
            pressures[account.id] = 0.0
            continue
        requests = (
            shared[ip_scope(account.exchange, base_url_of(account))] if pacing.scope == "ip" else 1
        )
        pressures[account.id] = requests / account_limit(account, pacing).capacity
    return pressures


def pacer_for(
    account: AccountConfig, budget: RateBudget, api_key: str | None = None
) -> Pacer | None:
    """The pacing of ``account``'s requests: its venue's scope and published limit, or the
    account's own tier (roster ``rate_limit``, in the venue's unit). None: ccxt venues."""
    pacing = VENUE_PACING.get(account.exchange)
    if pacing is None:
        return None
    limit = account_limit(account, pacing)
    base_url = base_url_of(account)
    if pacing.scope == "key":
        if api_key is None:
            raise ValueError(f"{account.exchange} counts its limit per API key: key required")
        scope = key_scope(account.exchange, base_url, api_key)
    else:
        scope = ip_scope(account.exchange, base_url)
    return Pacer(budget, scope, limit)


def build_venue_client(
    account: AccountConfig,
    roster: Roster,
    settings: Settings,
    http: httpx.Client,
    environ: Mapping[str, str],
    *,
    budget: RateBudget | None = None,
) -> VenueClient:
    """The venue client of ``account``, its secrets resolved; ConfigError names the field.

    With ``budget``, the client paces its requests on it (:func:`pacer_for`)."""
    where = f"{roster.source}: account {account.id!r}"
    timeout = float(settings.timeout_seconds)

    def paced(api_key: str | None) -> Pacer | None:
        return None if budget is None else pacer_for(account, budget, api_key)

    def secret(field: str, ref: SecretRef | None) -> str:
        if ref is None:
            raise ConfigError(f"{where}: field {field!r}: required for {account.exchange}")
        return _resolve(roster, ref, environ, f"{where}: field {field!r}")

    try:
        if account.exchange == "coinbase":
            key_name = secret("api_key", account.api_key).strip()
            return CoinbaseClient(
                http,
                base_url=base_url_of(account),
                key_name=key_name,
                private_key_pem=secret("api_secret", account.api_secret),
                timeout=timeout,
                pacer=paced(key_name),
            )
        if account.exchange == "dydx":
            assert account.address is not None
            return DydxClient(
                http,
                base_url=base_url_of(account),
                address=account.address,
                subaccount=account.subaccount,
                timeout=timeout,
                pacer=paced(None),
            )
        if account.exchange == "kraken":
            api_key = secret("api_key", account.api_key).strip()
            return KrakenClient(
                http,
                base_url=base_url_of(account),
                api_key=api_key,
                api_secret=secret("api_secret", account.api_secret).strip(),
                timeout=timeout,
                pacer=paced(api_key),
            )
        if account.exchange == "binance":
            return BinanceClient(
                http,
                base_url=base_url_of(account),
                api_key=secret("api_key", account.api_key).strip(),
                api_secret=secret("api_secret", account.api_secret).strip(),
                timeout=timeout,
                pacer=paced(None),
                weight_guard=binance.shared_weight_guard(
                    base_url_of(account), limit=binance_weight_limit(account)
                ),
            )
        if account.exchange.startswith("ccxt:"):
            return CcxtClient(
                account.exchange.removeprefix("ccxt:"),
                api_key=None if account.api_key is None else secret("api_key", account.api_key),
                api_secret=(
                    None if account.api_secret is None else secret("api_secret", account.api_secret)
                ),
                base_url=account.base_url,
                timeout=timeout,
            )
    except (CoinbaseKeyError, KrakenKeyError, BinanceKeyError) as error:
        raise ConfigError(f"{where}: field 'api_secret': {error}") from None
    except CcxtUnavailable as error:
        raise ConfigError(f"{where}: field 'exchange': {error}") from None
    except ValueError as error:
        raise ConfigError(f"{where}: {error}") from None
    raise ConfigError(
        f"{where}: field 'exchange': {account.exchange!r} is not supported by this version "
        f"(supported: {', '.join(SUPPORTED_EXCHANGES)})"
    )


def build_book(
    roster: Roster,
    settings: Settings,
    http: httpx.Client,
    environ: Mapping[str, str],
    resources: ExitStack,
) -> BookSource:
    """The book source the roster names (file, http or sql)."""
    book = roster.book
    timeout = float(settings.timeout_seconds)
    if isinstance(book, FileBookConfig):
        return FileBook(book.path)
    if isinstance(book, HttpBookConfig):
        return HttpBook(http, book.url, timeout=timeout)
    where = f"{roster.source}: field 'book.url'"
    url = book.url if isinstance(book.url, str) else _resolve(roster, book.url, environ, where)
    try:
        sql_book = SqlBook(url, book.query, timeout=timeout, upsert=book.upsert)
    except ValueError as error:
        raise ConfigError(f"{roster.source}: field 'book.query': {error}") from None
    resources.callback(sql_book.close)
    return sql_book


def build_prices(roster: Roster, settings: Settings, http: httpx.Client) -> PriceSource:
    """Static marks, or live Coinbase marks (static ones override them)."""
    if roster.prices.source == "coinbase":
        return CoinbasePrices(
            http,
            base_url=roster.prices.base_url or DEFAULT_BASE_URLS["coinbase"],
            timeout=float(settings.timeout_seconds),
            static=roster.prices.table,
        )
    return StaticPrices(roster.prices.table)


def alert_observers(
    settings: Settings, http: httpx.Client, audit: AuditRepository
) -> list[CycleObserver]:
    """With ``RECONCILIATION_WEBHOOK_URL`` set: one observer that sends each cycle's opened and
    resolved breaks (confirmed ones only; the audit history is the dedup state)."""
    if settings.webhook_url is None:
        return []
    secret = settings.webhook_secret
    webhook = WebhookAlerts(
        http,
        settings.webhook_url,
        secret=None if secret is None else secret.get_secret_value(),
        timeout=float(settings.timeout_seconds),
    )
    min_severity = Status(settings.alert_min_severity)

    def send_alerts(cycle: Cycle) -> None:
        publish_cycle_alerts(
            cycle,
            history_of=lambda account: audit.history(account_id=account, limit=3),
            sink=webhook,
            min_severity=min_severity,
            at=utc_now(),
        )

    return [send_alerts]


@contextmanager
def open_audit(settings: Settings, *, check_now: bool = True) -> Iterator[AuditRepository]:
    """The audit store, its schema checked (an empty SQLite file is migrated on first use):
    now, or (``check_now=False``: workers) before the store's first read or write."""
    engine = create_audit_engine(settings.database_url)
    try:
        if check_now:
            ensure_schema(engine)
            yield AuditRepository(engine)
        else:
            yield AuditRepository(engine, check_schema=ensure_schema)
    finally:
        engine.dispose()


@contextmanager
def open_operator_log(settings: Settings) -> Iterator[OperatorActionLog]:
    """The ``operator_actions`` log of the audit store, its schema checked as by open_audit."""
    engine = create_audit_engine(settings.database_url)
    try:
        ensure_schema(engine)
        yield OperatorActionLog(engine)
    finally:
        engine.dispose()


def upgrade_audit(settings: Settings) -> None:
    """Apply every migration to the configured database."""
    engine = create_audit_engine(settings.database_url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()


@dataclass
class Runtime(AbstractContextManager["Runtime"]):
    """The adapters of one CLI run; closing it closes the HTTP pool and the database."""

    plans: tuple[AccountPlan, ...]
    context: CycleContext
    _resources: ExitStack = field(default_factory=ExitStack)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._resources.close()


def build_runtime(
    configuration: Configuration,
    accounts: Sequence[AccountConfig],
    environ: Mapping[str, str],
    *,
    observers: Sequence[CycleObserver] = (),
    check_audit_now: bool = True,
) -> Runtime:
    """Every adapter a cycle over ``accounts`` needs; all configuration errors surface here.

    ``check_audit_now=False`` (workers): the audit store is first reached by the first task
    that reads or writes it, so a worker fetches while the database is down."""
    settings, roster = configuration.settings, configuration.roster
    # Every account's secrets, not only the selected ones: a configuration error refuses
    # the whole run (DESIGN §2).
    roster.check_secrets(environ)
    check_shared_budgets(roster)
    resources = ExitStack()
    try:
        http = resources.enter_context(
            httpx.Client(
                limits=httpx.Limits(
                    max_connections=HTTP_MAX_CONNECTIONS,
                    max_keepalive_connections=HTTP_MAX_CONNECTIONS,
                ),
                timeout=float(settings.timeout_seconds),
                follow_redirects=False,
            )
        )
        budget = build_rate_budget(settings)
        if isinstance(budget, RedisRateBudget):
            resources.callback(budget.close)
        pressures = budget_pressures(accounts)
        plans = tuple(
            AccountPlan(
                account_id=account.id,
                exchange=account.exchange,
                client=build_venue_client(account, roster, settings, http, environ, budget=budget),
                asset_map=account.asset_map,
                base_url=base_url_of(account),
                budget_pressure=pressures[account.id],
            )
            for account in accounts
        )
        book = build_book(roster, settings, http, environ, resources)
        prices = build_prices(roster, settings, http)
        audit = resources.enter_context(open_audit(settings, check_now=check_audit_now))
        fetch_pool = resources.enter_context(
            ThreadPoolExecutor(max_workers=HTTP_MAX_CONNECTIONS, thread_name_prefix="recon-fetch")
        )
        all_observers = [*observers, *alert_observers(settings, http, audit)]
    except BaseException:
        resources.close()
        raise
    context = CycleContext(
        book=book,
        prices=prices,
        policy=roster.policy,
        audit=audit,
        retry=RetryPolicy(retries=settings.retry_count),
        clock=utc_now,
        observers=tuple(all_observers),
        confirm_delay=float(settings.confirm_delay_seconds),
        fetch_pool=fetch_pool,
    )
    return Runtime(plans, context, resources)


def _port_in_use(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.settimeout(0.2)
        return probe.connect_ex((host, port)) == 0


@contextmanager
def embedded_sandbox(configuration: Configuration) -> Iterator[None]:
    """With the built-in roster, serve the sandbox venue for the duration of the run.

    If something already listens on the sandbox port (``recon sandbox`` in another shell),
    that server is used instead.
    """
    if not configuration.uses_builtin_roster:
        yield
        return
    if _port_in_use(SANDBOX_HOST, SANDBOX_PORT):
        log.info("sandbox port %d is already served; using that server", SANDBOX_PORT)
        yield
        return
    with SandboxServer(builtin_scenario_path(), host=SANDBOX_HOST, port=SANDBOX_PORT):
        yield


def serve_sandbox(scenario: Path | None, host: str, port: int) -> None:
    """Run the sandbox venue in the foreground until interrupted."""
    serve(scenario or builtin_scenario_path(), host=host, port=port)


__all__ = [
    "SANDBOX_PORT",
    "Configuration",
    "Runtime",
    "build_runtime",
    "builtin_roster_path",
    "configure_logging",
    "embedded_sandbox",
    "load_configuration",
    "open_audit",
    "open_operator_log",
    "select_accounts",
    "serve_sandbox",
    "upgrade_audit",
]
