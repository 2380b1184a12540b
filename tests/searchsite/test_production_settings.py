"""Production settings are safe by default: the app refuses to start with DEBUG=false and the
development (or an empty) SECRET_KEY, and `manage.py check --deploy` is clean with the production
variables documented in README.md and .env.example. Each runs a fresh process with that
environment (settings are read once, at import)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
GOOD_KEY = "k9Vq3-nG8sY2_tLx0pWz7RbE4mHc6JdA1uQfK5oSiN-vT3yU8eXg2rBw0Lh9ZaMj"

# The production variables as README "Production deployment" lists them.
PRODUCTION = {
    "DEBUG": "false",
    "SECRET_KEY": GOOD_KEY,
    "ALLOWED_HOSTS": "shop.example.com",
    "SECURE_SSL_REDIRECT": "true",
    "SECURE_HSTS_SECONDS": "31536000",
    "SECURE_HSTS_INCLUDE_SUBDOMAINS": "true",
    "SECURE_HSTS_PRELOAD": "true",
    "SECURE_PROXY_SSL_HEADER": "HTTP_X_FORWARDED_PROTO,https",
    "DATABASE_CONN_MAX_AGE": "60",
    "CACHE_URL": "redis://127.0.0.1:6379/1",
    "THROTTLE_NUM_PROXIES": "1",
}


def run(code_or_args: str | list[str], tmp_path, **env: str) -> subprocess.CompletedProcess:
    base = {
        k: v
        for k, v in os.environ.items()
        if k not in PRODUCTION and not k.startswith(("SECURE_", "SESSION_", "CSRF_"))
    }
    base.update(DJANGO_SETTINGS_MODULE="searchsite.settings", DATA_DIR=str(tmp_path), **env)
    base.pop("DATABASE_URL", None)
    args = code_or_args if isinstance(code_or_args, list) else ["-c", code_or_args]
    return subprocess.run(
        [sys.executable, *args], cwd=REPO_ROOT, env=base, capture_output=True, text=True
    )


SETUP = "import django; django.setup(); print('started')"


@pytest.mark.parametrize(
    "key, says",
    [
        (None, "the development key"),
        ("dev-only-insecure-key-change-me", "the development key"),
        ("", "empty"),
    ],
    ids=["unset", "development-key", "empty"],
)
def test_debug_false_refuses_to_start_without_a_secret_key_of_its_own(tmp_path, key, says):
    env = {"DEBUG": "false"} | ({} if key is None else {"SECRET_KEY": key})
    result = run(SETUP, tmp_path, **env)
    assert result.returncode != 0 and "started" not in result.stdout
    assert "ImproperlyConfigured" in result.stderr
    assert f"SECRET_KEY is {says}" in result.stderr
    assert "secrets.token_urlsafe(50)" in result.stderr  # says how to make one


def test_debug_false_starts_with_a_key_of_its_own_and_the_demo_starts_with_none(tmp_path):
    assert run(SETUP, tmp_path, DEBUG="false", SECRET_KEY=GOOD_KEY).stdout.strip() == "started"
    assert run(SETUP, tmp_path).stdout.strip() == "started"  # DEBUG defaults to true


def test_check_deploy_is_clean_with_the_documented_production_variables(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"], tmp_path, **PRODUCTION
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert "System check identified no issues" in result.stdout


def test_check_deploy_names_what_is_missing_without_them(tmp_path):
    result = run(
        ["manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        tmp_path,
        DEBUG="false",
        SECRET_KEY=GOOD_KEY,
        SESSION_COOKIE_SECURE="false",
    )
    assert result.returncode != 0
    for check in ("security.W004", "security.W008", "security.W012"):  # HSTS, redirect, cookie
        assert check in result.stderr
    # No CACHE_URL: throttles and photo searches would be per process.
    assert "searchsite.W001" in result.stderr and "CACHE_URL" in result.stderr


PRINT = (
    "import django; django.setup(); from django.conf import settings as s; "
    "print(s.SECURE_PROXY_SSL_HEADER, s.SESSION_COOKIE_SECURE, s.CSRF_COOKIE_SECURE, "
    "s.SECURE_SSL_REDIRECT, s.SECURE_HSTS_SECONDS)"
)


def test_https_settings_come_from_the_environment_and_default_to_the_local_demo(tmp_path):
    assert run(PRINT, tmp_path).stdout.split() == ["None", "False", "False", "False", "0"]
    production = run(PRINT, tmp_path, **PRODUCTION).stdout.strip()
    assert production == "('HTTP_X_FORWARDED_PROTO', 'https') True True True 31536000"
    bad = run(PRINT, tmp_path, SECURE_PROXY_SSL_HEADER="X_FORWARDED_PROTO")
    assert bad.returncode != 0
    assert "HTTP_X_FORWARDED_PROTO,https" in bad.stderr
