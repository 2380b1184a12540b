"""Integration tests: real PostgreSQL, real Redis, a real Celery worker process.

They need a database that two processes see at once, so they run against PostgreSQL (the
second pass of `make test`, DATABASE_URL=postgres://...); in the SQLite pass (an in-memory test
database no other process can open) they are skipped with that reason. Redis that cannot be
reached is a failure with what to do, never a skip.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from django.db import connection

REPO_ROOT = Path(__file__).resolve().parents[2]
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
START_REDIS = (
    "start Redis: `make services` (or: redis-server --daemonize yes --bind 127.0.0.1 --port 6379 "
    "--save '' --appendonly no); install it with `apt-get install redis-server`"
)


@pytest.fixture
def postgres_db():
    """The test database when it is PostgreSQL; skips on SQLite (see module docstring)."""
    if connection.vendor != "postgresql":
        pytest.skip(
            "needs PostgreSQL (a test database two processes can share); `make test` runs it in "
            "its PostgreSQL pass (DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres)"
        )
    return connection.settings_dict


def database_url(settings_dict) -> str:
    """A DATABASE_URL for another process that points at *this* test database."""
    user = settings_dict.get("USER") or ""
    password = settings_dict.get("PASSWORD") or ""
    auth = f"{user}:{password}@" if password else (f"{user}@" if user else "")
    host = settings_dict.get("HOST") or "127.0.0.1"
    port = settings_dict.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{settings_dict['NAME']}"


@pytest.fixture
def redis_url():
    """A Redis database of its own, emptied; a failure (not a skip) when Redis is down."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL} ({exc}): {START_REDIS}", pytrace=False)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


def child_env(settings, **extra: str) -> dict[str, str]:
    """Environment for a child process that sees the same data as this test process."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("EMBEDDINGS_", "CELERY_")) and k not in {"DATABASE_URL", "MEDIA_ROOT"}
    }
    env.update(
        DJANGO_SETTINGS_MODULE="searchsite.settings",
        DATABASE_URL=database_url(connection.settings_dict),
        MEDIA_ROOT=str(settings.MEDIA_ROOT),
        DATA_DIR=str(Path(settings.MEDIA_ROOT).parent / "data"),
        EMBEDDINGS_INDEX_DIR=str(settings.EMBEDDINGS_INDEX_DIR),
        EMBEDDINGS_MODEL=settings.EMBEDDINGS_MODEL,
        EMBEDDINGS_PRETRAINED=str(settings.EMBEDDINGS_PRETRAINED),
        EMBEDDINGS_SYNC_INTERVAL="0",
        PYTHONUNBUFFERED="1",
        LOG_LEVEL="INFO",
    )
    env.update(extra)
    return env


def manage_py(*args: str) -> list[str]:
    return [sys.executable, str(REPO_ROOT / "manage.py"), *args]


def stop(proc: subprocess.Popen, timeout: float = 10) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_gunicorn(env: dict[str, str], log) -> subprocess.Popen:
    """gunicorn with the project's config (searchsite/gunicorn.conf.py), as production runs it;
    GUNICORN_BIND and the rest come from ``env``."""
    return subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "-c", "searchsite/gunicorn.conf.py", "searchsite.wsgi"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
