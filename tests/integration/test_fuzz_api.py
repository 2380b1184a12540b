"""The short CI version of `make fuzz`: schemathesis against the live OpenAPI schema of the
product served by gunicorn (project config, DEBUG=false) on a throwaway PostgreSQL database,
a throwaway redis-server and a real Celery worker, anonymous and with a staff token. Every
response must be a non-5xx answer the schema describes (status, content type and body)."""

from __future__ import annotations

import os
import sys

import pytest

from .conftest import REPO_ROOT

sys.path.insert(0, str(REPO_ROOT / "scripts"))

import fuzz_api  # noqa: E402  (scripts/fuzz_api.py, the same code `make fuzz` runs)

pytestmark = pytest.mark.integration

EXAMPLES = 5  # per operation
SECONDS = 25  # per run (anonymous, staff): the whole test stays under 2 minutes on 2 cores


def test_live_api_answers_every_fuzzed_request_with_a_documented_non_5xx_response(
    postgres_db, tmp_path
):
    runs = fuzz_api.fuzz(
        pg_url=os.environ["DATABASE_URL"],
        workdir=tmp_path / "fuzz",
        examples=EXAMPLES,
        seconds=SECONDS,
        seed=1,
    )

    assert [run.name for run in runs] == ["anonymous", "staff"]
    report = "\n".join(
        [run.line() for run in runs]
        + [
            f"  {run.name}: {f['code']} {f['title']} x{f['count']} on {f['operations']}"
            for run in runs
            for f in run.failures
        ]
        + [f"--- {run.name} ---\n{run.log.read_text()[-4000:]}" for run in runs if not run.ok]
    )
    for run in runs:
        # A run that sent almost nothing proves nothing (e.g. the schema did not load).
        assert run.cases >= 100, report
        assert run.server_error_answers == 0 and run.server_errors == 0, report
        assert run.schema_violations == 0, report
        assert run.errors == 0, report
    # The staff run got past authentication: some writes were accepted.
    assert runs[1].statuses[201] > 0, report
