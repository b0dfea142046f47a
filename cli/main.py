"""The ``recon`` command line (DESIGN §6)."""

from __future__ import annotations

import json
import logging
import os
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NoReturn

import click
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from app import bootstrap
from app.cycle import VenueOutcome, run_cycle
from app.sync import sync_balances
from cli.exit_codes import ExitCode
from cli.render import history_csv, output_console, print_cycle, reports_table
from domain.confirmation import confirmed_cycle_status
from domain.report import FetchError
from domain.serialization import cycle_to_json, report_to_json
from infra.config import ConfigError
from infra.db import create_audit_engine, ensure_schema
from infra.db.errors import AuditStoreError
from infra.db.verify import verify_audit
from workers import embedded

log = logging.getLogger("recon")


def _fail(code: ExitCode, message: str) -> NoReturn:
    click.echo(f"recon: {message}", err=True)
    sys.exit(int(code))


@contextmanager
def _configured() -> Iterator[bootstrap.Configuration]:
    """Settings and roster loaded and validated, or exit CONFIG naming the problem."""
    try:
        configuration = bootstrap.load_configuration(os.environ)
    except ConfigError as error:
        _fail(ExitCode.CONFIG, f"configuration refused: {error}")
    bootstrap.configure_logging(configuration.settings)
    yield configuration


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """recon: does each venue hold what the book says?"""


@main.command()
@click.option("--all", "all_accounts", is_flag=True, help="Every account of the roster (default).")
@click.option("--account", "account_ids", multiple=True, metavar="ID", help="Only this account.")
@click.option("--exchange", metavar="NAME", help="Only the accounts of this venue.")
@click.option("--json", "as_json", is_flag=True, help="Print the cycle JSON (DESIGN §5).")
def reconcile(
    all_accounts: bool, account_ids: Sequence[str], exchange: str | None, as_json: bool
) -> None:
    """Reconcile now, in this process, and write the audit rows."""
    if sum([all_accounts, bool(account_ids), exchange is not None]) > 1:
        raise click.UsageError("choose one of --all, --account, --exchange")
    with _configured() as configuration:
        try:
            selected = bootstrap.select_accounts(
                configuration.roster, account_ids=account_ids, exchange=exchange
            )
        except ConfigError as error:
            _fail(ExitCode.CONFIG, str(error))
        try:
            runtime = bootstrap.build_runtime(configuration, selected, os.environ)
        except ConfigError as error:
            _fail(ExitCode.CONFIG, f"configuration refused: {error}")
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
        with runtime, bootstrap.embedded_sandbox(configuration):
            cycle_id = str(uuid.uuid4())
            stderr = Console(stderr=True)
            with Progress(
                TextColumn("fetching venues"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("{task.description}"),
                TimeElapsedColumn(),
                console=stderr,
                transient=True,
                disable=not stderr.is_terminal,
            ) as progress:
                task = progress.add_task("", total=len(runtime.plans))

                def fetched(account_id: str, outcome: VenueOutcome) -> None:
                    mark = "failed" if isinstance(outcome, FetchError) else "ok"
                    progress.update(task, advance=1, description=f"{account_id} {mark}")

                try:
                    cycle = run_cycle(
                        cycle_id=cycle_id,
                        plans=runtime.plans,
                        context=runtime.context,
                        on_fetched=fetched,
                    )
                except AuditStoreError as error:
                    _fail(ExitCode.AUDIT_STORE, f"{error}; nothing of cycle {cycle_id} was written")
        if as_json:
            click.echo(json.dumps(cycle_to_json(cycle), indent=2))
        else:
            print_cycle(output_console(), cycle)
        sys.exit(int(ExitCode.of_status(confirmed_cycle_status(cycle))))


@main.command()
@click.option("--account", "account_id", metavar="ID", help="Only this account.")
@click.option("--exchange", metavar="NAME", help="Only this venue.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 10_000))
@click.option("--json", "as_json", is_flag=True, help="Reports as a JSON list, newest first.")
@click.option("--csv", "as_csv", is_flag=True, help="One CSV row per report.")
def history(
    account_id: str | None, exchange: str | None, limit: int, as_json: bool, as_csv: bool
) -> None:
    """Past reports from the audit store, newest first."""
    if as_json and as_csv:
        raise click.UsageError("choose one of --json, --csv")
    with _configured() as configuration:
        try:
            with bootstrap.open_audit(configuration.settings) as repository:
                reports = repository.history(account_id=account_id, exchange=exchange, limit=limit)
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
        if as_json:
            click.echo(json.dumps([report_to_json(r) for r in reports], indent=2))
        elif as_csv:
            click.echo(history_csv(reports), nl=False)
        else:
            output_console().print(reports_table(reports, f"history ({len(reports)} reports)"))


#: The caller's operator token for ``recon sync`` (DESIGN §6); never logged or stored.
OPERATOR_TOKEN_ENV = "RECONCILIATION_OPERATOR_TOKEN"  # noqa: S105 - a variable name

_SYNC_EXIT = {"synced": ExitCode.OK, "refused": ExitCode.SYNC_REFUSED}


@main.command()
@click.option("--account", "account_id", required=True, metavar="ID", help="The account.")
@click.option("--operator", required=True, metavar="NAME", help="Who asks (token bound to it).")
@click.option("--reason", required=True, metavar="TEXT", help="Why (recorded).")
def sync(account_id: str, operator: str, reason: str) -> None:
    """Write the venue's balances of one account into the book (authorised operators only).

    The token is read from RECONCILIATION_OPERATOR_TOKEN. Exit 0 synced, 8 refused, 9 failed.
    """
    token = os.environ.get(OPERATOR_TOKEN_ENV, "")
    with _configured() as configuration:
        try:
            selected = bootstrap.select_accounts(configuration.roster, account_ids=[account_id])
            tokens = configuration.settings.operator_token_table()
            runtime = bootstrap.build_runtime(configuration, selected, os.environ)
        except ConfigError as error:
            _fail(ExitCode.CONFIG, f"configuration refused: {error}")
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
        try:
            with (
                runtime,
                bootstrap.embedded_sandbox(configuration),
                bootstrap.open_operator_log(configuration.settings) as action_log,
            ):
                outcome = sync_balances(
                    account_id=account_id,
                    operator=operator,
                    token=token,
                    reason=reason,
                    tokens=tokens,
                    plan=runtime.plans[0],
                    book=runtime.context.book,
                    log=action_log,
                    retry=runtime.context.retry,
                    clock=runtime.context.clock,
                )
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
    click.echo(json.dumps(outcome, indent=2))
    sys.exit(int(_SYNC_EXIT.get(str(outcome["outcome"]), ExitCode.SYNC_FAILED)))


@main.group()
def db() -> None:
    """The audit database."""


@db.command()
def upgrade() -> None:
    """Apply the audit store's migrations (any database)."""
    with _configured() as configuration:
        try:
            bootstrap.upgrade_audit(configuration.settings)
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
        click.echo("audit store is at the latest schema", err=True)


@main.group()
def audit() -> None:
    """The audit trail's integrity."""


@audit.command()
def verify() -> None:
    """Check the audit hash chain and that the database refuses UPDATE/DELETE (DESIGN §5)."""
    with _configured() as configuration:
        engine = create_audit_engine(configuration.settings.database_url)
        try:
            ensure_schema(engine)
            problems = verify_audit(engine)
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))
        finally:
            engine.dispose()
        for problem in problems:
            click.echo(str(problem))
        if problems:
            _fail(
                ExitCode.AUDIT_TAMPERED,
                f"audit NOT intact, {len(problems)} problem(s); first: {problems[0]}",
            )
        click.echo("audit intact: chain verified, UPDATE and DELETE refused", err=True)


@main.command()
def up() -> None:
    """Worker + beat + sandbox in one process on the embedded default; Ctrl-C stops it."""
    with _configured() as configuration:
        if configuration.settings.broker_url is not None:
            _fail(
                ExitCode.CONFIG,
                "recon up runs the embedded default: unset RECONCILIATION_BROKER_URL, or run "
                "`celery -A workers worker` and `celery -A workers beat` against your broker",
            )
        try:
            embedded.run(configuration)
        except ConfigError as error:
            _fail(ExitCode.CONFIG, f"configuration refused: {error}")
        except AuditStoreError as error:
            _fail(ExitCode.AUDIT_STORE, str(error))


@main.command()
@click.option(
    "--scenario",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Scenario TOML (default: the built-in one the default roster points at).",
)
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=bootstrap.SANDBOX_PORT, show_default=True, type=int)
def sandbox(scenario: Path | None, host: str, port: int) -> None:
    """Run the venue simulator (DESIGN §7) until interrupted."""
    bootstrap.serve_sandbox(scenario, host, port)
