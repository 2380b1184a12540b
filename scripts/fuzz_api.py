#!/usr/bin/env python
"""`make fuzz`: schemathesis against the live OpenAPI schema of the product as it runs in
production (gunicorn with searchsite/gunicorn.conf.py, DEBUG=false, PostgreSQL, Redis, a Celery
worker; see scripts/live_stack.py), once anonymously and once with a staff token.

Checks: not_a_server_error, status_code_conformance, response_schema_conformance and
content_type_conformance on every response. The catalog holds a few products with generated
images, embedded before the server starts, so searches return results. Throttling is set out
of the way (the NO_THROTTLE rates of live_stack.py): the fuzzer is one fast client.

Each run is bounded by examples per operation (--examples, FUZZ_EXAMPLES) and by time
(--seconds per run, FUZZ_SECONDS; schemathesis keeps fuzzing until that time is spent). It
prints, per run, the cases run, the 5xx answers and the schema violations, and exits non-zero
on any. Each failure, with a curl line that reproduces it, is in var/fuzz/<run>.log.

    python scripts/fuzz_api.py [--examples 20] [--seconds 120] [--seed 1] [--pg-url URL]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_e2e import say, tool  # noqa: E402
from live_stack import LiveStack, StackError  # noqa: E402

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "response_schema_conformance",
    "content_type_conformance",
)
# schemathesis failure codes (`st explain --list`): ST101/ST102 are 5xx answers; the other
# ST1xx codes are answers the schema does not describe (status, content type, body).
SERVER_ERROR_CODES = {"ST101", "ST102"}
CATALOG_PRODUCTS = 8
STATUS_RE = re.compile(r'"status_code":\s*(\d{3})\b')


@dataclass
class FuzzRun:
    name: str
    cases: int = 0
    server_errors: int = 0  # unique 5xx failures
    server_error_answers: int = 0  # every 5xx response seen
    schema_violations: int = 0  # unique failures of the other checks
    errors: int = 0  # cases schemathesis could not run (network, generation)
    failures: list[dict] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    log: Path | None = None
    exit_code: int = 0

    @property
    def ok(self) -> bool:
        return (
            self.cases > 0
            and not self.server_errors
            and not self.server_error_answers
            and not self.schema_violations
            and not self.errors
        )

    def line(self) -> str:
        return (
            f"{self.name}: {self.cases} cases, {self.server_error_answers} 5xx answers "
            f"({self.server_errors} distinct), {self.schema_violations} schema violations, "
            f"{self.errors} errors"
        )


def status_counts(ndjson: Path) -> Counter:
    """How many responses had each status, among everything schemathesis sent (from its NDJSON
    event stream: one recorded response per case)."""
    counts: Counter = Counter()
    if ndjson.exists():
        with ndjson.open() as fh:
            for line in fh:
                counts.update(int(code) for code in STATUS_RE.findall(line))
    return counts


def schemathesis_run(
    name: str,
    port: int,
    *,
    examples: int,
    seconds: int,
    seed: int,
    outdir: Path,
    token: str | None = None,
) -> FuzzRun:
    """One bounded `st run` against the live schema; its figures from the JSON report."""
    report_dir = outdir / f"{name}-report"
    log = outdir / f"{name}.log"
    cmd = [tool("st"), "run", f"http://127.0.0.1:{port}/api/v1/schema/?format=json"]
    cmd += ["--checks", ",".join(CHECKS), "--max-examples", str(examples)]
    cmd += ["--max-time", str(seconds), "--seed", str(seed), "--workers", "1"]
    cmd += ["--request-timeout", "60", "--report", "json,ndjson", "--report-dir", str(report_dir)]
    cmd += ["--report-json-path", str(report_dir / "run.json")]
    cmd += ["--report-ndjson-path", str(report_dir / "events.ndjson")]
    if token:
        cmd += ["--header", f"Authorization: Token {token}"]
    say(f"schemathesis, {name}: up to {examples} examples per operation, {seconds} s")
    env = {**os.environ, "NO_COLOR": "1", "COLUMNS": "120"}
    with log.open("w") as fh:
        # cwd: schemathesis keeps a cache folder (.schemathesis/) in its working directory.
        proc = subprocess.run(cmd, cwd=outdir, env=env, stdout=fh, stderr=subprocess.STDOUT)
    run = FuzzRun(name, log=log, exit_code=proc.returncode)
    try:
        report = json.loads((report_dir / "run.json").read_text())
    except (OSError, ValueError) as exc:
        run.errors = 1
        say(f"  no JSON report ({exc}); schemathesis said:\n{log.read_text()[-3000:]}")
        return run
    run.cases = int(report["test_cases"]["generated"])
    run.errors = int(report["test_cases"].get("errored", 0)) + len(report.get("errors") or [])
    for failure in report.get("failures") or []:
        run.failures.append(failure)
        if failure["code"] in SERVER_ERROR_CODES:
            run.server_errors += int(failure["count"])
        else:
            run.schema_violations += int(failure["count"])
    run.statuses = status_counts(report_dir / "events.ndjson")
    run.server_error_answers = sum(n for code, n in run.statuses.items() if code >= 500)
    say(f"  {run.line()}")
    say("    statuses: " + ", ".join(f"{code} x{n}" for code, n in sorted(run.statuses.items())))
    for failure in run.failures:
        say(
            f"    {failure['code']} {failure['title']} x{failure['count']}: {failure['operations']}"
        )
    return run


def fuzz(
    *,
    pg_url: str,
    workdir: Path,
    examples: int,
    seconds: int,
    seed: int = 1,
    web_workers: int = 2,
    keep: bool = False,
) -> list[FuzzRun]:
    """The whole run: the stack up, schemathesis anonymous then staff, the stack down."""
    with LiveStack("fuzz", pg_url=pg_url, workdir=workdir, web_workers=web_workers, keep=keep) as s:
        s.load_catalog(count=CATALOG_PRODUCTS)
        token = s.staff_token()
        s.start_worker()
        port = s.start_web()
        runs = [
            schemathesis_run(
                "anonymous", port, examples=examples, seconds=seconds, seed=seed, outdir=workdir
            ),
            schemathesis_run(
                "staff",
                port,
                examples=examples,
                seconds=seconds,
                seed=seed,
                outdir=workdir,
                token=token,
            ),
        ]
        dead = s.check_alive()
        if dead:
            raise StackError(f"{', '.join(dead)} exited during the fuzz run; see {workdir}/*.log")
        return runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--examples",
        type=int,
        default=int(os.environ.get("FUZZ_EXAMPLES", "20")),
        help="per operation",
    )
    parser.add_argument(
        "--seconds",
        type=int,
        default=int(os.environ.get("FUZZ_SECONDS", "120")),
        help="time budget of each of the two runs (anonymous, staff)",
    )
    parser.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", "1")))
    parser.add_argument(
        "--pg-url", default=os.environ.get("PG_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    )
    parser.add_argument("--web-workers", type=int, default=2)
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "fuzz")
    parser.add_argument("--keep", action="store_true", help="keep the throwaway database")
    args = parser.parse_args(argv)
    t = time.perf_counter()
    try:
        runs = fuzz(
            pg_url=args.pg_url,
            workdir=args.workdir,
            examples=args.examples,
            seconds=args.seconds,
            seed=args.seed,
            web_workers=args.web_workers,
            keep=args.keep,
        )
    except StackError as exc:
        print(f"FAILED to start the stack: {exc}", file=sys.stderr)
        return 2
    load = os.getloadavg()
    print()
    print(
        f"Fuzz summary ({time.perf_counter() - t:.0f} s, load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}):"
    )
    for run in runs:
        print(f"  {'ok    ' if run.ok else 'FAILED'} {run.line()}")
    if all(run.ok for run in runs):
        print("No 5xx and no schema violations.")
        return 0
    print(
        "Each failure, with a curl line that reproduces it, is in "
        + ", ".join(str(run.log) for run in runs if not run.ok)
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
