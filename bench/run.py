"""``python -m bench``: recon's real pipeline on the sandbox, timed, against issue 6's targets.

For each run: a scenario (:mod:`bench.scenarios`) served by one sandbox server per venue
endpoint on loopback; the machine's Redis (an empty database, flushed between runs and at the
end) and PostgreSQL (a throwaway ``recon_bench_<hex>``, migrated, dropped at the end); N Celery
worker processes (``--pool threads --concurrency C``; the naive baseline on the default prefork
pool). After ``--warmup`` unmeasured cycles (the workers build their adapters on the first
task) — for recon's runs more, up to 4, until every worker has run a cycle's join —,
``--cycles`` cycles are measured, each from ``send_task("recon.reconcile_all")`` to its
result, which the join returns once the audit rows are committed. Each cycle's reports are
checked against the seeded findings, and the audit table must have gained one row per account
and cycle. Between the cycles of a rate-limited scenario the bench waits out the longest limit
window, as a real tick interval would.

Scenarios (``--scenario``):

- ``smoke``: 6 accounts on 2 endpoints, 3 assets, 20 ms: seconds (the test suite runs it).
- ``s1``: issue 6's S1 (50 accounts, 5 endpoints, 20 assets, 200 ms), recon's configuration
  (``--batch-size``, default the setting's default) and the naive baseline.
- ``s2``: S2 (1 000 accounts, 10 endpoints, 50 assets, 100 ms, the venues' published limits),
  recon's configuration and the naive baseline.
- ``sweep``: the chord header's granularity: S1 and S2's shape without limits, at each
  ``--batch-sizes`` (RECONCILIATION_FETCH_BATCH_SIZE).

Exit status: 0 when every run completed (whatever its verdicts; with ``--strict``, 1 if a
target FAILed), 2 when the bench could not run (a service unreachable, a worker dead).
"""

from __future__ import annotations

import argparse
import math
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from bench import harness
from bench.report import RunResult, machine_summary, render_table
from bench.scenarios import S1, S2, S2_UNLIMITED, SMOKE, GeneratedScenario, ScenarioSpec, generate
from infra.config.settings import Settings

DEFAULT_CONCURRENCY: Final = 16
DEFAULT_WORKERS: Final = 2
DEFAULT_SWEEP: Final = (1, 10, 50, 100)
SCENARIO_CHOICES: Final = ("smoke", "s1", "s2", "sweep")
#: RECONCILIATION_CONFIRM_DELAY_SECONDS of the bench's workers: breaks are re-fetched at once.
CONFIRM_DELAY_SECONDS: Final = 0.0

Progress = Callable[[str], None]


def default_batch_size() -> int:
    """RECONCILIATION_FETCH_BATCH_SIZE's default."""
    value = Settings.model_fields["fetch_batch_size"].default
    assert isinstance(value, int)
    return value


@dataclass(frozen=True, slots=True)
class RunSpec:
    """One run: a scenario and the workers' configuration."""

    label: str
    scenario: ScenarioSpec
    batch_size: int
    pool: str = "threads"
    concurrency: int | None = DEFAULT_CONCURRENCY
    workers: int = DEFAULT_WORKERS
    baseline: bool = False


def plan_runs(
    scenario: str,
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    workers: int = DEFAULT_WORKERS,
    batch_size: int | None = None,
    batch_sizes: Sequence[int] = DEFAULT_SWEEP,
    naive: bool = True,
) -> list[RunSpec]:
    """The runs of ``--scenario``."""
    batch = default_batch_size() if batch_size is None else batch_size
    if scenario == "smoke":
        return [RunSpec("smoke", SMOKE, batch, concurrency=min(concurrency, 4), workers=workers)]
    if scenario == "sweep":
        return [
            RunSpec(
                f"{spec.name} batch={size}", spec, size, concurrency=concurrency, workers=workers
            )
            for spec in (S1, S2_UNLIMITED)
            for size in batch_sizes
        ]
    if scenario in ("s1", "s2"):
        spec = S1 if scenario == "s1" else S2
        runs = [
            RunSpec(f"{spec.name} recon", spec, batch, concurrency=concurrency, workers=workers)
        ]
        if naive:
            # One task per account on the default prefork pool (one process per CPU), no pacing.
            runs.append(
                RunSpec(
                    f"{spec.name} naive",
                    spec,
                    1,
                    pool="prefork",
                    concurrency=None,
                    workers=workers,
                    baseline=True,
                )
            )
        return runs
    raise ValueError(f"unknown scenario {scenario!r}; choose from {', '.join(SCENARIO_CHOICES)}")


def header_tasks(generated: GeneratedScenario, batch_size: int) -> int:
    """How many chord header tasks a cycle has (one per batch of an endpoint's accounts)."""
    return sum(math.ceil(len(e.accounts) / batch_size) for e in generated.endpoints)


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", label).strip("-").lower()


def _gap_seconds(generated: GeneratedScenario) -> float:
    """The pause between cycles: the longest rate-limit window (0 without limits)."""
    return max((e.limit.window_s for e in generated.endpoints if e.limit is not None), default=0.0)


def _wrong_reports(generated: GeneratedScenario, cycle: dict[str, Any]) -> int:
    statuses = harness.reports_by_status(cycle)
    wrong = sum(1 for a, status in generated.expected.items() if statuses.get(a) != status)
    wrong += len(set(statuses) - set(generated.expected))
    return wrong + len(cycle.get("skipped", []))


@dataclass
class _Services:
    """What every run of one bench shares."""

    redis: harness.RedisDatabase
    postgres: harness.PostgresDatabase
    client: Any  # celery.Celery
    folder: Path


def _measure(
    index: int,
    run: RunSpec,
    *,
    generated: GeneratedScenario,
    sandboxes: harness.Sandboxes,
    roster: Path,
    services: _Services,
    cycles: int,
    warmup: int,
    cycle_timeout: float,
    log_level: str,
    progress: Progress,
) -> RunResult:
    spec = generated.spec
    result = RunResult(
        label=run.label,
        scenario=spec.name,
        accounts=spec.accounts,
        endpoints=spec.endpoints,
        assets=spec.assets,
        latency_ms=spec.latency_ms,
        pool=run.pool,
        concurrency=run.concurrency,
        workers=run.workers,
        batch_size=run.batch_size,
        header_tasks=header_tasks(generated, run.batch_size),
        floor=generated.floor(CONFIRM_DELAY_SECONDS),
        baseline=run.baseline,
    )
    services.redis.flush()
    rows_before = services.postgres.count_rows()  # the audit table is append-only
    sandboxes.reset()
    env = harness.worker_environment(
        {
            "RECONCILIATION_ACCOUNTS_FILE": str(roster),
            "RECONCILIATION_DATABASE_URL": services.postgres.url,
            "RECONCILIATION_BROKER_URL": services.redis.url,
            "RECONCILIATION_RESULT_BACKEND": services.redis.url,
            "RECONCILIATION_FETCH_BATCH_SIZE": str(run.batch_size),
            "RECONCILIATION_METRICS_PORT": "0",
            "RECONCILIATION_CONFIRM_DELAY_SECONDS": f"{CONFIRM_DELAY_SECONDS:g}",
            "RECONCILIATION_LOG_LEVEL": log_level,
        }
    )
    folder = services.folder / f"{index:02d}-{_slug(run.label)}"
    folder.mkdir(parents=True)
    gap = _gap_seconds(generated)
    progress(f"[{run.label}] starting {run.workers} worker(s) ({run.pool})")
    with harness.Workers(
        run.workers,
        pool=run.pool,
        concurrency=run.concurrency,
        env=env,
        folder=folder,
        prefix=f"bench{index:02d}w",
        app_module="bench.naive_worker" if run.baseline else "bench.worker",
    ) as workers:
        before: list[int] = []
        warmups = 0
        number = 0
        while number < warmups + cycles or not before:
            if number > 0 and gap > 0:
                time.sleep(gap)
            # The naive baseline's RSS is not judged: its warm-up is --warmup, no more.
            if not before and warmed_up(
                number, warmup, joined=run.baseline or workers.all_have_joined()
            ):
                before = workers.rss_kb()
                warmups = number
            workers_cpu = workers.cpu_seconds()
            bench_cpu = time.process_time()
            try:
                wall, cycle_id, cycle = harness.run_reconcile_all(
                    services.client, timeout=cycle_timeout
                )
            except Exception as error:
                workers.check_alive()
                raise harness.BenchError(f"[{run.label}] cycle failed: {error!r}") from error
            result.wrong_reports += _wrong_reports(generated, cycle)
            measured = bool(before)
            if measured:
                result.walls.append(wall)
                result.sandbox_cpu.append(time.process_time() - bench_cpu)
                result.workers_cpu.append(workers.cpu_seconds() - workers_cpu)
                audit = workers.audit_write_seconds(cycle_id)
                if audit is not None:
                    result.audit_seconds.append(audit[0])
                    result.encode_seconds.append(audit[1])
            number += 1
            label = f"{number - warmups}/{cycles}" if measured else f"{number} (warm-up)"
            progress(f"[{run.label}] cycle {label}: {wall:.3f} s")
        after = workers.rss_kb()
    growth = [(a - b) / 1024 / cycles for a, b in zip(after, before, strict=True)]
    result.rss_growth_mb_per_cycle = max(growth, default=0.0)
    result.warmups = warmups
    result.throttled = sandboxes.throttled()
    rows = services.postgres.count_rows() - rows_before
    result.wrong_reports += abs(rows - spec.accounts * (warmups + cycles))
    return result


#: Warm-up cycles the bench adds, at most, waiting for every worker to have run a join.
EXTRA_WARMUP_MAX: Final = 4


def warmed_up(done: int, warmup: int, *, joined: bool) -> bool:
    """Whether the measured cycles may start after ``done`` cycles: ``warmup`` of them at
    least, and every worker has run a cycle's join (``joined``: the largest task; a worker's
    first join grows it once, which is not growth per cycle) — or ``EXTRA_WARMUP_MAX`` more
    cycles did not get there (the joins go to whichever worker is free)."""
    if done < warmup:
        return False
    return joined or done >= warmup + EXTRA_WARMUP_MAX


def execute(
    runs: Sequence[RunSpec],
    *,
    cycles: int = 3,
    warmup: int = 1,
    cycle_timeout: float = 300.0,
    log_level: str = "INFO",
    keep: Path | None = None,
    progress: Progress | None = None,
) -> list[RunResult]:
    """Run ``runs`` (runs of one scenario share its sandbox servers) and return the results.

    ``keep``: a folder to leave the scenario files, rosters and worker logs in (default: a
    temporary folder, removed at the end). Raises :class:`harness.ServiceUnavailable` or
    :class:`harness.BenchError` when the bench cannot run.
    """
    if cycles < 1 or warmup < 0:
        raise ValueError("at least one measured cycle, and no negative warm-up")
    say = progress or (lambda _message: None)
    results: list[RunResult] = []
    with ExitStack() as stack:
        if keep is None:
            folder = Path(tempfile.mkdtemp(prefix="recon-bench-"))
            stack.callback(shutil.rmtree, folder, ignore_errors=True)
        else:
            folder = keep
            folder.mkdir(parents=True, exist_ok=True)
        harness.check_redis()
        harness.postgres_admin()
        redis_db = harness.claim_redis_database()
        stack.callback(redis_db.release)
        postgres = harness.create_postgres_database()
        stack.callback(postgres.drop)
        client = harness.client_app(redis_db.url)
        stack.callback(harness.close_client, client)
        services = _Services(redis_db, postgres, client, folder)
        say(f"redis db {redis_db.number}, postgres {postgres.name}, files in {folder}")
        by_scenario: dict[ScenarioSpec, list[tuple[int, RunSpec]]] = {}
        for index, run in enumerate(runs):
            by_scenario.setdefault(run.scenario, []).append((index, run))
        measured: dict[int, RunResult] = {}
        for spec, members in by_scenario.items():
            generated = generate(spec)
            scenario_folder = folder / _slug(spec.name)
            files = generated.write_scenarios(scenario_folder)
            with harness.Sandboxes(files) as sandboxes:
                roster = generated.write_roster(scenario_folder, sandboxes.base_urls)
                for index, run in members:
                    measured[index] = _measure(
                        index,
                        run,
                        generated=generated,
                        sandboxes=sandboxes,
                        roster=roster,
                        services=services,
                        cycles=cycles,
                        warmup=warmup,
                        cycle_timeout=cycle_timeout,
                        log_level=log_level,
                        progress=say,
                    )
        results = [measured[i] for i in range(len(runs))]
    naive = {r.scenario: r.wall for r in results if r.baseline}
    for result in results:
        if not result.baseline and result.scenario in naive:
            result.naive_wall = naive[result.scenario]
    return results


def _batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError("comma-separated integers, e.g. 1,10,50,100") from None
    if not sizes or min(sizes) < 1:
        raise argparse.ArgumentTypeError("batch sizes are integers of 1 or more")
    return sizes


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m bench``."""
    cli = argparse.ArgumentParser(
        prog="python -m bench",
        description="Time recon's Celery cycle on the sandbox against issue 6's targets.",
    )
    cli.add_argument("--scenario", choices=SCENARIO_CHOICES, default="s1")
    cli.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="worker processes")
    cli.add_argument(
        "--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="threads per worker"
    )
    cli.add_argument("--cycles", type=int, default=3, help="measured cycles per run (median)")
    cli.add_argument(
        "--warmup",
        type=int,
        default=1,
        help="unmeasured cycles first (at least; more, up to 4, until every worker ran a join)",
    )
    cli.add_argument(
        "--batch-size", type=int, default=None, help="s1/s2/smoke: RECONCILIATION_FETCH_BATCH_SIZE"
    )
    cli.add_argument(
        "--batch-sizes",
        type=_batch_sizes,
        default=list(DEFAULT_SWEEP),
        help="sweep: the batch sizes to compare (default 1,10,50,100)",
    )
    cli.add_argument("--no-naive", action="store_true", help="s1/s2: skip the naive baseline")
    cli.add_argument("--log-level", default="INFO", help="the workers' RECONCILIATION_LOG_LEVEL")
    cli.add_argument("--cycle-timeout", type=float, default=300.0, help="seconds per cycle")
    cli.add_argument("--keep", type=Path, default=None, help="keep files and worker logs here")
    cli.add_argument("--output", type=Path, default=None, help="also write the table here")
    cli.add_argument("--strict", action="store_true", help="exit 1 if any target FAILs")
    return cli


def main(argv: Sequence[str] | None = None) -> int:
    """Run the bench and print its table; the exit status (see the module docstring)."""
    args = parser().parse_args(argv)

    def progress(message: str) -> None:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()

    runs = plan_runs(
        args.scenario,
        concurrency=args.concurrency,
        workers=args.workers,
        batch_size=args.batch_size,
        batch_sizes=args.batch_sizes,
        naive=not args.no_naive,
    )
    try:
        results = execute(
            runs,
            cycles=args.cycles,
            warmup=args.warmup,
            cycle_timeout=args.cycle_timeout,
            log_level=args.log_level,
            keep=args.keep,
            progress=progress,
        )
    except (harness.ServiceUnavailable, harness.BenchError) as error:
        progress(f"bench could not run: {error}")
        return 2
    text = "\n".join(
        [
            render_table(results),
            "",
            f"command: python -m bench {' '.join(argv if argv is not None else sys.argv[1:])}",
            f"{machine_summary()}; {args.cycles} measured cycle(s) after the warm-up cycles"
            f" in the RSS column (--warmup {args.warmup})",
        ]
    )
    sys.stdout.write(text + "\n")
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    if args.strict and not all(r.passed for r in results):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
