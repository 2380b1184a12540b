"""A production-like copy of the product on loopback, for the fuzz and load tests.

``LiveStack`` starts, in this order and each only when asked: a throwaway redis-server on a
free port (never the machine's shared Redis), a throwaway PostgreSQL database (created with the
project's migrations, dropped at the end), a catalog (``manage.py load_demo_catalog``: real
photos of a dataset folder, or generated images), a staff user and its API token, a real
``celery worker`` (and ``celery beat``), and gunicorn with the project's config
(searchsite/gunicorn.conf.py) and ``DEBUG=false``. Everything listens on 127.0.0.1 only.
Process and database helpers come from scripts/bench_e2e.py (the end-to-end benchmark starts
the same pieces). Leaving the ``with`` block stops every process it started and drops the
database, also after an error or Ctrl-C.

    with LiveStack("fuzz", pg_url=..., workdir=Path("var/fuzz")) as stack:
        stack.load_catalog(count=8)
        token = stack.staff_token()
        stack.start_worker()
        port = stack.start_web()
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from bench_e2e import Http, db_url, free_port, manage, say, start, stop, tool  # noqa: E402

STAFF_USER, STAFF_PASSWORD = "stack-staff", "stack-staff-password-" + secrets.token_hex(8)
# High enough that no throttle gets in the way of a fuzz or load client (several hundred
# requests a second from one address); the names are the ones searchsite/settings.py reads.
NO_THROTTLE = {
    "THROTTLE_SEARCH_ANON": "1000000/min",
    "THROTTLE_SEARCH_USER": "1000000/min",
    "THROTTLE_AUTH_TOKEN": "1000000/min",
}


class StackError(RuntimeError):
    """A piece of the stack did not start; the message says which log to read."""


def log_tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


class LiveStack:
    def __init__(
        self,
        name: str,
        *,
        pg_url: str,
        workdir: Path,
        web_workers: int = 2,
        keep: bool = False,
        env: dict[str, str] | None = None,
    ) -> None:
        self.name, self.pg_url, self.workdir = name, pg_url, Path(workdir).resolve()
        self.web_workers, self.keep = web_workers, keep
        self.db_name = f"shopsearch_{name}_{os.getpid()}"
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}/0"
        self.web_port = free_port()
        self.procs: dict[str, subprocess.Popen] = {}
        self.db_created = False
        self.env = self._env(env or {})

    # -- environment ------------------------------------------------------------------------------
    def _env(self, extra: dict[str, str]) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("EMBEDDINGS_", "CELERY_", "GUNICORN_", "THROTTLE_", "CACHE_"))
            and k not in {"DATABASE_URL", "MEDIA_ROOT", "DATA_DIR", "STATIC_ROOT"}
        }
        env.update(
            DJANGO_SETTINGS_MODULE="searchsite.settings",
            DATABASE_URL=db_url(self.pg_url, self.db_name),
            DATA_DIR=str(self.workdir / "data"),
            MEDIA_ROOT=str(self.workdir / "media"),
            STATIC_ROOT=str(self.workdir / "static"),
            EMBEDDINGS_INDEX_DIR=str(self.workdir / "data" / "index"),
            CELERY_BROKER_URL=self.redis_url,
            # The throttles count in Redis, shared by every gunicorn worker, as in production.
            CACHE_URL=f"redis://127.0.0.1:{self.redis_port}/1",
            CELERY_TASK_ALWAYS_EAGER="false",
            DEBUG="false",
            SECRET_KEY=f"{self.name}-stack-" + secrets.token_urlsafe(40),
            ALLOWED_HOSTS="127.0.0.1,localhost",
            LOG_LEVEL="WARNING",
            PYTHONUNBUFFERED="1",
            GUNICORN_BIND=f"127.0.0.1:{self.web_port}",
            GUNICORN_WORKERS=str(self.web_workers),
            PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p),
            **NO_THROTTLE,
        )
        env.update(extra)
        return env

    # -- lifecycle ----------------------------------------------------------------------------------
    def __enter__(self) -> LiveStack:
        try:
            if self.workdir.exists():
                shutil.rmtree(self.workdir)
            (self.workdir / "static").mkdir(parents=True)
            self._start_redis()
            self._create_database()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for what in ("web", "beat", "worker", "redis"):
            proc = self.procs.pop(what, None)
            if proc is not None:
                stop(proc, what)
        if self.db_created and not self.keep:
            import psycopg

            try:
                with psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5) as admin:
                    admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
                self.db_created = False
            except psycopg.Error as exc:
                say(f"could not drop database {self.db_name} ({exc}); drop it by hand")

    def _start_redis(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise StackError("redis-server is not installed: apt-get install redis-server")
        log = self.workdir / "redis.log"
        cmd = [binary, "--port", str(self.redis_port), "--bind", "127.0.0.1"]
        cmd += ["--save", "", "--appendonly", "no", "--dir", str(self.workdir)]
        self.procs["redis"] = start(cmd, self.env, log)
        import redis

        client = redis.Redis(port=self.redis_port, socket_connect_timeout=1)
        for _ in range(100):
            try:
                client.ping()
                say(f"redis-server (throwaway) on 127.0.0.1:{self.redis_port}")
                return
            except redis.exceptions.ConnectionError:
                time.sleep(0.1)
        raise StackError(f"redis-server did not answer on port {self.redis_port}:\n{log_tail(log)}")

    def _create_database(self) -> None:
        import psycopg

        try:
            admin = psycopg.connect(self.pg_url, autocommit=True, connect_timeout=5)
        except psycopg.OperationalError as exc:
            raise StackError(
                f"PostgreSQL is not reachable at {self.pg_url} ({exc}): start it (`make services`) "
                "or pass --pg-url / PG_URL"
            ) from exc
        with admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
            admin.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_created = True
        t = time.perf_counter()
        self.manage("migrate", "--noinput", timeout=600)
        say(f"database {self.db_name} (throwaway): migrated in {time.perf_counter() - t:.0f} s")

    # -- data ---------------------------------------------------------------------------------------
    def manage(self, *args: str, timeout: float = 600, env: dict | None = None) -> float:
        return manage(
            {**self.env, **(env or {})}, *args, timeout=timeout, log=self.workdir / "manage.log"
        )

    def load_catalog(self, *, count: int, source: Path | None = None) -> None:
        """``count`` products with their images embedded (in this command's process, so they
        are indexed before the servers start): photos of ``source`` (a folder with
        manifest.csv) or, without one, generated images."""
        t = time.perf_counter()
        args = ["load_demo_catalog", "--count", str(count)]
        if source is not None:
            args += ["--source", str(source)]
        self.manage(*args, timeout=1800)
        what = f"photos of {source}" if source else "generated images"
        say(f"catalog: {count} products ({what}) in {time.perf_counter() - t:.0f} s")

    def staff_token(self) -> str:
        """Creates a staff user (not a superuser) and returns its API token."""
        code = (
            "from django.contrib.auth import get_user_model; "
            "from rest_framework.authtoken.models import Token; "
            f"u = get_user_model().objects.create_user({STAFF_USER!r}, password={STAFF_PASSWORD!r}, "
            "is_staff=True); print('TOKEN', Token.objects.create(user=u).key)"
        )
        out = self.django(code)
        return out.split("TOKEN", 1)[1].split()[0]

    def django(self, code: str, timeout: float = 300) -> str:
        """Runs Python ``code`` in a Django shell against the stack's database; its stdout."""
        proc = subprocess.run(
            [tool("python"), "manage.py", "shell", "-v", "0", "-c", code],
            cwd=ROOT,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode:
            raise StackError(f"manage.py shell failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
        return proc.stdout

    def django_json(self, code: str, timeout: float = 300):
        """Like ``django``; the code prints one JSON document as its last line."""
        return json.loads(self.django(code, timeout).strip().splitlines()[-1])

    # -- processes --------------------------------------------------------------------------------
    def start_worker(
        self, *, concurrency: int = 1, timeout: float = 120, log_level: str = "WARNING"
    ) -> None:
        """A real Celery worker on the throwaway Redis; returns once it answers a ping. At
        ``log_level="INFO"`` its log has a line per task run (what the load test counts)."""
        from celery import Celery

        name = f"{self.name}-{os.getpid()}@stack"
        log = self.workdir / "worker.log"
        cmd = [tool("celery"), "-A", "searchsite", "worker", f"--concurrency={concurrency}"]
        cmd += [f"--loglevel={log_level}", "-n", name, "--without-gossip", "--without-mingle"]
        env = {**self.env, "LOG_LEVEL": log_level}
        proc = self.procs["worker"] = start(cmd, env, log)
        control = Celery(broker=self.redis_url).control
        t = time.perf_counter()
        while time.perf_counter() - t < timeout and proc.poll() is None:
            if control.ping(destination=[name], timeout=0.5):
                say(
                    f"celery worker ({concurrency} process(es)) ready in {time.perf_counter() - t:.0f} s"
                )
                return
        raise StackError(f"celery worker not ready in {timeout:.0f} s; {log}:\n{log_tail(log)}")

    def start_beat(self) -> None:
        log = self.workdir / "beat.log"
        cmd = [tool("celery"), "-A", "searchsite", "beat", "--loglevel=WARNING"]
        cmd += ["--schedule", str(self.workdir / "celerybeat-schedule")]
        self.procs["beat"] = start(cmd, self.env, log)
        time.sleep(1.0)
        if self.procs["beat"].poll() is not None:
            raise StackError(f"celery beat exited; {log}:\n{log_tail(log)}")
        say("celery beat started")

    def start_web(self, *, timeout: float = 180) -> int:
        """gunicorn with searchsite/gunicorn.conf.py; returns its port once the OpenAPI schema
        and a search both answer 200."""
        log = self.workdir / "gunicorn.log"
        cmd = [tool("gunicorn"), "-c", "searchsite/gunicorn.conf.py", "searchsite.wsgi"]
        proc = self.procs["web"] = start(cmd, self.env, log)
        client = Http(self.web_port, timeout=30)
        t = time.perf_counter()
        last = "no answer"
        while time.perf_counter() - t < timeout and proc.poll() is None:
            try:
                status, body, _ = client.request("GET", "/api/v1/schema/?format=json")
                if status == 200:
                    status, body, _ = client.get_search({"q": "shirt"})
                    if status == 200:
                        client.close()
                        say(
                            f"gunicorn ({self.web_workers} workers) answers on "
                            f"127.0.0.1:{self.web_port} after {time.perf_counter() - t:.0f} s"
                        )
                        return self.web_port
                last = f"HTTP {status} {body[:200]!r}"
            except OSError as exc:
                client.close()
                last = repr(exc)
            time.sleep(0.3)
        raise StackError(
            f"gunicorn did not answer within {timeout:.0f} s (last: {last}); {log}:\n{log_tail(log)}"
        )

    def check_alive(self) -> list[str]:
        """Names of started processes that have exited since."""
        return [what for what, proc in self.procs.items() if proc.poll() is not None]
