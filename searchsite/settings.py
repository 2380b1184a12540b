"""Django settings. Every knob is an environment variable with a default that runs the
embedded set-up (SQLite, Celery eager, index files under DATA_DIR); see .env.example."""

import os
import re
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value not in (None, "") else default


def env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value not in (None, "") else default


DATA_DIR = Path(os.environ.get("DATA_DIR", BASE_DIR / "var")).resolve()

DEVELOPMENT_SECRET_KEY = "dev-only-insecure-key-change-me"
SECRET_KEY = os.environ.get("SECRET_KEY", DEVELOPMENT_SECRET_KEY)
DEBUG = env_bool("DEBUG", True)
if not DEBUG and SECRET_KEY.strip() in ("", DEVELOPMENT_SECRET_KEY):
    # Sessions, password resets and CSRF tokens are signed with it: a published key lets anyone
    # forge them. Refuse to run in production mode (DEBUG=false) without a key of its own.
    raise ImproperlyConfigured(
        "DEBUG is false but SECRET_KEY is "
        + ("empty" if not SECRET_KEY.strip() else "the development key from the source code")
        + ". Set SECRET_KEY to a long random string of your own, e.g. the output of "
        "`python -c 'import secrets; print(secrets.token_urlsafe(50))'` (or DEBUG=true for the "
        "local demo)."
    )
ALLOWED_HOSTS = [
    h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

# --- HTTPS (production) -------------------------------------------------------------------------
# Off by default so the local demo works on http://127.0.0.1; README "Production deployment" lists
# the values with which `manage.py check --deploy` is clean. Cookies are Secure by default when
# DEBUG is false (set them false to try production mode over plain http).
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)
# Behind a proxy that terminates TLS: "HTTP_X_FORWARDED_PROTO,https" (the header the proxy sets,
# and its value for https). Only when the proxy always sets (or strips) that header.
_proxy_ssl_header = [
    part.strip()
    for part in os.environ.get("SECURE_PROXY_SSL_HEADER", "").split(",")
    if part.strip()
]
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        "SECURE_PROXY_SSL_HEADER must be a header and a value, e.g. HTTP_X_FORWARDED_PROTO,https."
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) if _proxy_ssl_header else None

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",  # Swagger UI / ReDoc files served locally: the docs work offline
    "catalog",
    "embeddings",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    # Before CsrfViewMiddleware, which reads POST bodies: an oversized body is refused unread.
    "searchsite.middleware.RequestSizeLimitMiddleware",
    "searchsite.middleware.DatabaseUnavailableMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Counts a product page opened from a search result (?sid=) for the search analytics.
    "embeddings.analytics.middleware.SearchClickMiddleware",
]

ROOT_URLCONF = "searchsite.urls"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

WSGI_APPLICATION = "searchsite.wsgi.application"

DATABASES = {
    "default": dj_database_url.parse(
        os.environ.get("DATABASE_URL", f"sqlite:///{DATA_DIR / 'db.sqlite3'}"),
        conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 0),
        # A kept connection is checked before a request reuses it: one that broke while the
        # database was away is replaced, not failed on.
        conn_health_checks=env_bool("DATABASE_CONN_HEALTH_CHECKS", True),
    )
}
# A database that is away must cost a request seconds, not minutes (PostgreSQL only): connecting
# gives up after DATABASE_CONNECT_TIMEOUT seconds (also a server that accepts the connection and
# never answers), and a web request's SQL statement is cancelled by the server after
# DATABASE_STATEMENT_TIMEOUT seconds (0: never). The request then answers 503 (Retry-After).
# The statement timeout applies to web processes only (searchsite/wsgi.py adds
# DATABASE_WEB_OPTIONS): commands and Celery workers stream whole tables (rebuild_index,
# reembed, compaction) and are never cut short.
DATABASE_CONNECT_TIMEOUT = env_int("DATABASE_CONNECT_TIMEOUT", 5)
DATABASE_STATEMENT_TIMEOUT = env_float("DATABASE_STATEMENT_TIMEOUT", 30.0)
DATABASE_WEB_OPTIONS: dict[str, str] = {}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    if DATABASE_CONNECT_TIMEOUT > 0:
        DATABASES["default"].setdefault("OPTIONS", {})["connect_timeout"] = DATABASE_CONNECT_TIMEOUT
    if DATABASE_STATEMENT_TIMEOUT > 0:
        # A libpq startup parameter: set when the connection opens, no extra round trip.
        DATABASE_WEB_OPTIONS["options"] = (
            f"-c statement_timeout={int(DATABASE_STATEMENT_TIMEOUT * 1000)}"
        )
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # SQLite creates the file but not its folder; a fresh DATA_DIR would fail with
    # "unable to open database file".
    _sqlite_name = str(DATABASES["default"].get("NAME") or "")
    if _sqlite_name and _sqlite_name != ":memory:" and not _sqlite_name.startswith("file:"):
        Path(_sqlite_name).parent.mkdir(parents=True, exist_ok=True)
    # Web requests and the eager worker share one file; wait for the write lock instead of failing.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = Path(os.environ.get("STATIC_ROOT", DATA_DIR / "static"))
STATICFILES_FINDERS = [
    "django.contrib.staticfiles.finders.FileSystemFinder",
    "django.contrib.staticfiles.finders.AppDirectoriesFinder",
    # plotly.js from the plotly package, for the admin's catalog map (embeddings/staticfiles.py).
    "embeddings.staticfiles.PlotlyJSFinder",
]
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)

# Uploads: the largest image file accepted, and the largest decoded image (decompression bombs).
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 40_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440
# The largest request body (Content-Length) accepted at all, refused with 413 before it is read
# (searchsite/middleware.py). Default: a product created with its 20 images at MAX_UPLOAD_BYTES
# each, plus 1 MiB of form fields. The searches (one image) accept MAX_UPLOAD_BYTES + 1 MiB.
MAX_REQUEST_BYTES = env_int("MAX_REQUEST_BYTES", 20 * MAX_UPLOAD_BYTES + 1024 * 1024)

# --- Cache --------------------------------------------------------------------------------------
# What the API's throttles count with (and any other Django cache use). CACHE_URL=redis://host:6379/1
# shares it between every process and machine (Django's Redis backend); empty: local memory,
# counted per process (N gunicorn workers then allow N times the rate).
CACHE_URL = os.environ.get("CACHE_URL", "")
if CACHE_URL:
    CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": CACHE_URL,
            "KEY_PREFIX": os.environ.get("CACHE_KEY_PREFIX", "shopsearch"),
            # A Redis that is away costs a request at most this, never a hang.
            "OPTIONS": {"socket_connect_timeout": 1, "socket_timeout": 1},
        }
    }
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -----------------------------------------------------------------------------
# With no broker configured, tasks run in-process (eager): the embedded set-up needs no Redis.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_EAGER_PROPAGATES = env_bool("CELERY_TASK_EAGER_PROPAGATES", False)
# A task is acknowledged after it ran, and given back when its worker process dies: a killed
# worker's messages are delivered again (embedding twice is harmless: tasks skip unchanged images).
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
# A worker that loses the broker stops its running tasks (they could not be acknowledged) and gets
# them again once it reconnects: Celery 6's default, chosen now. A worker started before the
# broker waits for it instead of exiting.
CELERY_WORKER_CANCEL_LONG_RUNNING_TASKS_ON_CONNECTION_LOSS = True
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Redis broker: a message taken by a worker that died without acknowledging it (SIGKILL, power
# loss) is delivered again after this many seconds. Keep it above the longest task including its
# countdown (embedding retries back off up to 240 s); a message older than this that is still
# running is delivered a second time, which the tasks tolerate.
CELERY_BROKER_VISIBILITY_TIMEOUT = env_float("CELERY_BROKER_VISIBILITY_TIMEOUT", 300.0)
# Seconds to wait for the broker when connecting, and for an answer to a command (a Redis that
# accepts connections but hangs); with CELERY_PUBLISH_MAX_RETRIES they bound what a save costs
# while the broker is down (refused: ~0.3 s; hung: ~(retries + 1) x socket timeout). The save
# still succeeds: its images stay pending and the periodic reconcile queues them once it is back.
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 1.0)
CELERY_BROKER_SOCKET_TIMEOUT = env_float("CELERY_BROKER_SOCKET_TIMEOUT", 1.0)
CELERY_PUBLISH_MAX_RETRIES = env_int("CELERY_PUBLISH_MAX_RETRIES", 2)
CELERY_TASK_PUBLISH_RETRY_POLICY = {
    "max_retries": CELERY_PUBLISH_MAX_RETRIES,
    "interval_start": 0,
    "interval_step": 0.2,
    "interval_max": 0.5,
}
CELERY_BROKER_TRANSPORT_OPTIONS = {
    "visibility_timeout": CELERY_BROKER_VISIBILITY_TIMEOUT,
    "socket_connect_timeout": CELERY_BROKER_CONNECTION_TIMEOUT,
    "socket_timeout": CELERY_BROKER_SOCKET_TIMEOUT,
    # How often a worker looks for messages past their visibility timeout (kombu: every
    # interval x throttle seconds, 100 by default): a tenth of the timeout, at least 1 s.
    "unacked_restore_interval": max(1, int(CELERY_BROKER_VISIBILITY_TIMEOUT // 10)),
    "unacked_restore_throttle": 1,
}
CELERY_TASK_DEFAULT_QUEUE = os.environ.get("CELERY_TASK_DEFAULT_QUEUE", "celery")
CELERY_TASK_ROUTES = {
    "embeddings.tasks.image_embed_task": {"queue": os.environ.get("EMBEDDINGS_QUEUE", "celery")},
}
CELERY_BEAT_SCHEDULE = {
    "index-snapshot": {
        "task": "embeddings.tasks.index_snapshot_task",
        "schedule": env_float("EMBEDDINGS_SNAPSHOT_INTERVAL", 300.0),
    },
    # Keeps the IndexChange log from growing forever; see EMBEDDINGS_CHANGE_LOG_DAYS.
    "index-change-prune": {
        "task": "embeddings.tasks.index_changes_prune_task",
        "schedule": 24 * 3600.0,
    },
    # Queues images whose embedding was lost (broker down at save, worker killed) or whose vector
    # is missing or out of date; see EMBEDDINGS_RECONCILE_*.
    "index-reconcile": {
        "task": "embeddings.tasks.index_reconcile_task",
        "schedule": env_float("EMBEDDINGS_RECONCILE_INTERVAL", 60.0),
    },
    # Deletes logged searches (and their clicks) older than SEARCH_LOG_DAYS.
    "search-log-prune": {
        "task": "embeddings.tasks.search_log_prune_task",
        "schedule": 24 * 3600.0,
    },
    # Product popularity (a ranking signal) from recent search clicks.
    "products-popularity": {
        "task": "embeddings.tasks.products_popularity_task",
        "schedule": env_float("RANK_POPULARITY_INTERVAL", 3600.0),
    },
}

# --- Shop ---------------------------------------------------------------------------------------
# ISO 4217 code of the prices in the catalog: shown on the pages ("$19.99", "12.50 CHF") and
# returned by the API beside each price.
SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "USD").strip().upper()
if not re.fullmatch(r"[A-Z]{3}", SHOP_CURRENCY):
    raise ImproperlyConfigured(
        f"SHOP_CURRENCY={SHOP_CURRENCY!r} is not an ISO 4217 currency code; set it to e.g. USD, EUR or INR."
    )

# --- Search analytics (embeddings/analytics) ----------------------------------------------------
# Every search is logged without personal data (query words or "photo", mode, filters, result
# count, latency; never an IP address, user, session or the photo) with the products opened from
# its results, for the admin's Search analytics report. SEARCH_LOG_ENABLED=false logs nothing.
SEARCH_LOG_ENABLED = env_bool("SEARCH_LOG_ENABLED", True)
# Days a logged search is kept; the daily prune (celery beat) deletes older ones. 0: keep all.
SEARCH_LOG_DAYS = env_int("SEARCH_LOG_DAYS", 90)
if SEARCH_LOG_DAYS < 0:
    raise ImproperlyConfigured(f"SEARCH_LOG_DAYS={SEARCH_LOG_DAYS}: use 0 (keep) or more days.")
# A click (product opened from the results) counts only within this many hours of its search.
SEARCH_LOG_CLICK_HOURS = env_float("SEARCH_LOG_CLICK_HOURS", 24.0)

# --- Type-ahead and "did you mean" (embeddings/suggestions.py) -----------------------------------
# Completions as the shopper types: catalog phrases (title openings, category names) and popular
# queries. A query is offered to others only when at least SEARCH_SUGGEST_MIN_SEARCHES searches
# with results typed it over the last SEARCH_SUGGEST_DAYS days (one shopper's words never show).
# Never under 2: a query one search typed is never shown to anyone else.
SEARCH_SUGGEST_MIN_SEARCHES = max(2, env_int("SEARCH_SUGGEST_MIN_SEARCHES", 5))
SEARCH_SUGGEST_DAYS = max(1, env_int("SEARCH_SUGGEST_DAYS", 30))
SEARCH_SUGGEST_LIMIT = max(1, env_int("SEARCH_SUGGEST_LIMIT", 8))
# Seconds a process keeps the popular queries it read from the search log before reading again.
SEARCH_SUGGEST_QUERIES_TTL = env_float("SEARCH_SUGGEST_QUERIES_TTL", 300.0)
# Least seconds between two rebuilds of a process's catalog vocabulary (read from the word index
# when it has changed); 0 rebuilds at the first request after each change.
SEARCH_SUGGEST_REFRESH = env_float("SEARCH_SUGGEST_REFRESH", 10.0)

# --- Bulk import from the admin (embeddings/import_jobs.py) --------------------------------------
# Admin > Embeddings > Catalog imports: a CSV plus an optional ZIP of images, imported by a Celery
# task. Without a ZIP the CSV's image paths are relative to IMPORT_ROOT (empty: MEDIA_ROOT/imports);
# a path that leads out of it is a row error. Upload files are never served at MEDIA_URL.
IMPORT_ROOT = os.environ.get("IMPORT_ROOT", "")
# A ZIP is refused at upload when it holds more files than this, or more bytes once unpacked (a
# ZIP bomb); each image in it may be at most MAX_UPLOAD_BYTES. Only image files are unpacked.
IMPORT_ZIP_MAX_FILES = env_int("IMPORT_ZIP_MAX_FILES", 20_000)
IMPORT_ZIP_MAX_BYTES = env_int("IMPORT_ZIP_MAX_BYTES", 4 * 1024**3)
# Rows per commit (and images per model call); the job's progress is saved after each batch.
IMPORT_BATCH_SIZE = env_int("IMPORT_BATCH_SIZE", 64)
if IMPORT_ZIP_MAX_FILES < 1 or IMPORT_ZIP_MAX_BYTES < 1 or IMPORT_BATCH_SIZE < 1:
    raise ImproperlyConfigured(
        "IMPORT_ZIP_MAX_FILES, IMPORT_ZIP_MAX_BYTES and IMPORT_BATCH_SIZE must be 1 or more."
    )

# --- Product image files and costly queries (privacy and abuse bounds) --------------------------
# Product images are served at MEDIA_URL by a view that checks the product is active (staff see
# all); SERVE_MEDIA above turns that route on. MEDIA_ACCEL hands the sending to the web server
# after the check: "x-accel-redirect" (nginx: an `internal` location at MEDIA_ACCEL_PREFIX aliased
# to MEDIA_ROOT, see README), "x-sendfile" (Apache mod_xsendfile, lighttpd), or "" (Django sends).
MEDIA_ACCEL = os.environ.get("MEDIA_ACCEL", "").strip().lower()
if MEDIA_ACCEL not in {"", "x-accel-redirect", "x-sendfile"}:
    raise ImproperlyConfigured(
        f"MEDIA_ACCEL={MEDIA_ACCEL!r}: use x-accel-redirect (nginx), x-sendfile (Apache) or leave it empty."
    )
MEDIA_ACCEL_PREFIX = (
    "/" + os.environ.get("MEDIA_ACCEL_PREFIX", "/protected-media/").strip("/") + "/"
)
# How long browsers and shared caches may keep an active product's image (seconds); a product
# made inactive can stay visible in such caches this long.
MEDIA_CACHE_SECONDS = env_int("MEDIA_CACHE_SECONDS", 24 * 3600)
# Thumbnails of product images (catalog.thumbnails): made once per image content by the embedding
# worker or `manage.py make_thumbnails`, at these widths in pixels (an image narrower than a width
# gets one at its own width, never upscaled). Grids use them through srcset; the product page's
# gallery shows the largest. WebP at THUMBNAIL_QUALITY (1-100).
_thumbnail_widths = os.environ.get("THUMBNAIL_WIDTHS", "160,320,640")
try:
    THUMBNAIL_WIDTHS = tuple(sorted({int(w) for w in _thumbnail_widths.split(",") if w.strip()}))
except ValueError:
    THUMBNAIL_WIDTHS = ()
if not THUMBNAIL_WIDTHS or not all(16 <= w <= 4096 for w in THUMBNAIL_WIDTHS):
    raise ImproperlyConfigured(
        f"THUMBNAIL_WIDTHS={_thumbnail_widths!r}: give widths in pixels between 16 and 4096, "
        "separated by commas, e.g. 160,320,640."
    )
THUMBNAIL_QUALITY = env_int("THUMBNAIL_QUALITY", 80)
if not 1 <= THUMBNAIL_QUALITY <= 100:
    raise ImproperlyConfigured(f"THUMBNAIL_QUALITY={THUMBNAIL_QUALITY}: use a value from 1 to 100.")
# Product attributes shown as facets (search page sidebar, the API's `facets`) and usable as
# filters (`colour=red`): names of keys of Product.attributes, comma-separated, in display order.
# Attribute values are stored lower-case; a product without the attribute is left out of its facet.
_facet_attributes = os.environ.get("CATALOG_FACET_ATTRIBUTES", "colour,pattern,type,usage,gender")
CATALOG_FACET_ATTRIBUTES = tuple(
    dict.fromkeys(a.strip().lower() for a in _facet_attributes.split(",") if a.strip())
)
if len(CATALOG_FACET_ATTRIBUTES) > 8 or not all(
    re.fullmatch(r"[a-z][a-z0-9_]{0,39}", a) for a in CATALOG_FACET_ATTRIBUTES
):
    raise ImproperlyConfigured(
        f"CATALOG_FACET_ATTRIBUTES={_facet_attributes!r}: give at most 8 attribute names (letters, "
        "digits, underscores, starting with a letter) separated by commas, e.g. colour,type,usage."
    )
# Price-range facet: the bucket edges (ascending, comma-separated); "0,25,50,100" gives
# 0-25, 25-50, 50-100 and 100+ (a bucket holds min <= price < max).
_price_edges = os.environ.get("SEARCH_FACET_PRICE_EDGES", "0,25,50,100,200")
try:
    SEARCH_FACET_PRICE_EDGES = tuple(float(e) for e in _price_edges.split(",") if e.strip())
except ValueError:
    SEARCH_FACET_PRICE_EDGES = ()
if len(SEARCH_FACET_PRICE_EDGES) < 1 or list(SEARCH_FACET_PRICE_EDGES) != sorted(
    set(SEARCH_FACET_PRICE_EDGES)
):
    raise ImproperlyConfigured(
        f"SEARCH_FACET_PRICE_EDGES={_price_edges!r}: give ascending prices separated by commas, "
        "e.g. 0,25,50,100,200."
    )
# Image queries (API image search, the page's photo search): JPEGs are decoded at a reduced
# scale, other formats are decoded in full, so those above this many pixels are refused
# (400 image_too_large) before decoding: a 36 MP PNG would cost ~1 s of CPU per search.
EMBEDDINGS_QUERY_MAX_PIXELS = env_int("EMBEDDINGS_QUERY_MAX_PIXELS", 16_000_000)
# Seconds a photo search on the page stays usable (pagination, filters) after its last use. The
# photo's vector is kept in the Django cache under an unguessable token, never in a session.
SEARCH_PHOTO_TTL = env_int("SEARCH_PHOTO_TTL", 3600)

# --- Embeddings ---------------------------------------------------------------------------
# open_clip model name and weights: a pretrained tag (e.g. ViT-B-32 / laion2b_s34b_b79k) or a
# local checkpoint path. Default: the starter model shipped in embeddings/starter (works offline).
EMBEDDINGS_MODEL = os.environ.get("EMBEDDINGS_MODEL", "shopclip-starter")
EMBEDDINGS_PRETRAINED = os.environ.get(
    "EMBEDDINGS_PRETRAINED", str(BASE_DIR / "embeddings" / "starter" / "shopclip-starter.pt")
)
EMBEDDINGS_DEVICE = os.environ.get("EMBEDDINGS_DEVICE", "cpu")
EMBEDDINGS_BATCH_SIZE = env_int("EMBEDDINGS_BATCH_SIZE", 32)
EMBEDDINGS_INDEX_DIR = Path(os.environ.get("EMBEDDINGS_INDEX_DIR", DATA_DIR / "index"))
# How often (seconds) a serving process asks the database for index changes.
EMBEDDINGS_SYNC_INTERVAL = env_float("EMBEDDINGS_SYNC_INTERVAL", 1.0)
# Days of IndexChange rows kept by the daily prune (0: never prune). Snapshots are written every
# few minutes, so only an index asleep longer than this has to rebuild from the stored vectors.
EMBEDDINGS_CHANGE_LOG_DAYS = env_float("EMBEDDINGS_CHANGE_LOG_DAYS", 7.0)
# The reconcile (celery beat, every EMBEDDINGS_RECONCILE_INTERVAL seconds) queues again images
# pending longer than EMBEDDINGS_RECONCILE_GRACE seconds since they were queued, and images with
# no vector (or an out-of-date one) of the serving model; at most EMBEDDINGS_RECONCILE_BATCH per
# run. Failed images are left to staff. An upload is therefore embedded within about
# interval + grace + CELERY_BROKER_VISIBILITY_TIMEOUT once a broker and a worker are up.
EMBEDDINGS_RECONCILE_INTERVAL = env_float("EMBEDDINGS_RECONCILE_INTERVAL", 60.0)
EMBEDDINGS_RECONCILE_GRACE = env_float("EMBEDDINGS_RECONCILE_GRACE", 300.0)
EMBEDDINGS_RECONCILE_BATCH = env_int("EMBEDDINGS_RECONCILE_BATCH", 1000)
# Text-query results scoring below this cosine similarity are dropped ("no good match"). Unset:
# the model card's calibrated min_score; -1 keeps everything.
EMBEDDINGS_MIN_SCORE = (
    env_float("EMBEDDINGS_MIN_SCORE", 0.0) if os.environ.get("EMBEDDINGS_MIN_SCORE") else None
)
# Hybrid retrieval: fuse products whose title/SKU contain the query's words with the vector
# results (reciprocal rank fusion). See `manage.py evaluate --hybrid` for its measured effect:
# with the MobileNetV2 starter, weight 2 beats 1 on title R@1/R@10 and "colour type" P@10.
EMBEDDINGS_HYBRID = env_bool("EMBEDDINGS_HYBRID", True)
EMBEDDINGS_HYBRID_WEIGHT = env_float("EMBEDDINGS_HYBRID_WEIGHT", 2.0)
EMBEDDINGS_HYBRID_RRF_K = env_int("EMBEDDINGS_HYBRID_RRF_K", 60)
# Steerable queries: how much the terms to leave out ("shirt -striped", the API's `not`) weigh
# together against the wanted parts (0..1; the wanted parts weigh 1). See docs/API.md.
EMBEDDINGS_NOT_WEIGHT = env_float("EMBEDDINGS_NOT_WEIGHT", 0.5)
# Products of each ranking (vectors, words) fused by hybrid search; rankings are computed to
# max(page end, this), not to the 1000-result cap.
EMBEDDINGS_RANK_WINDOW = env_int("EMBEDDINGS_RANK_WINDOW", 100)
# Business ranking signals (embeddings/ranking.py; docs/API.md "Ranking signals"): shop-wide
# weights added to each result's relevance over the first EMBEDDINGS_RANK_WINDOW results before
# a page is cut. All 0/off: results rank by relevance alone. A search's `modifiers` replace them.
RANK_BOOST_WEIGHT = env_float("RANK_BOOST_WEIGHT", 0.0)
RANK_NEWNESS_WEIGHT = env_float("RANK_NEWNESS_WEIGHT", 0.0)
RANK_NEWNESS_HALF_LIFE_DAYS = env_float("RANK_NEWNESS_HALF_LIFE_DAYS", 30.0)
RANK_POPULARITY_WEIGHT = env_float("RANK_POPULARITY_WEIGHT", 0.0)
RANK_OUT_OF_STOCK_PENALTY = env_float("RANK_OUT_OF_STOCK_PENALTY", 0.0)
# Leave products whose tracked stock is 0 out of search results (untracked stock counts as in).
RANK_IN_STOCK_ONLY = env_bool("RANK_IN_STOCK_ONLY", False)
# Popularity = log(1 + search clicks over this many days), recomputed by celery beat this often.
RANK_POPULARITY_DAYS = env_int("RANK_POPULARITY_DAYS", 30)
RANK_POPULARITY_INTERVAL = env_float("RANK_POPULARITY_INTERVAL", 3600.0)
# Compaction (celery beat's snapshot_index): a new base is built from the stored vectors when
# this many images changed since the current one, or it is older than EMBEDDINGS_COMPACT_AGE
# seconds and anything changed. Until then processes carry the changes as a small delta.
EMBEDDINGS_COMPACT_CHANGES = env_int("EMBEDDINGS_COMPACT_CHANGES", 5000)
EMBEDDINGS_COMPACT_AGE = env_float("EMBEDDINGS_COMPACT_AGE", 3600.0)
# Every serving process re-checks the checksums of the base it maps this often (seconds; 0: only
# when a base is opened, or when a search scores outside [-1, 1]). ~0.3 s per check at 1M images.
EMBEDDINGS_VERIFY_INTERVAL = env_float("EMBEDDINGS_VERIFY_INTERVAL", 600.0)
# Index type: flat (exact), ivf (IVF-Flat with an HNSW coarse quantizer), ivfpq (IVF with PQ
# codes: the memory-saving option), or auto (ivf from EMBEDDINGS_IVF_THRESHOLD vectors up).
# See `make bench` for speed, recall and memory of each.
EMBEDDINGS_INDEX_KIND = os.environ.get("EMBEDDINGS_INDEX_KIND", "auto")
EMBEDDINGS_IVF_THRESHOLD = env_int("EMBEDDINGS_IVF_THRESHOLD", 200_000)
EMBEDDINGS_IVF_NLIST = env_int("EMBEDDINGS_IVF_NLIST", 0)  # 0: 4*sqrt(n)
# Lists probed by an unfiltered query (at least; see embeddings/engine/segments.py). 64 keeps
# recall@10 >= 0.99 for text and image queries at 1M (32: text 0.96), ~1 ms (make bench).
EMBEDDINGS_IVF_NPROBE = env_int("EMBEDDINGS_IVF_NPROBE", 64)
EMBEDDINGS_IVF_PQ_M = env_int("EMBEDDINGS_IVF_PQ_M", 0)  # 0: IVF-Flat; else PQ sub-quantizers
# Threads per process for the model (torch) and FAISS. 1 by default: a query is too small to
# gain from threads, and OpenMP threads spin-waiting on cores that other processes use made
# one query 40x slower on a busy 2-core machine (see README, Benchmarks). Scale with
# processes; raise these only for a worker that has the machine to itself. 0 = library default.
EMBEDDINGS_TORCH_THREADS = env_int("EMBEDDINGS_TORCH_THREADS", 1)
EMBEDDINGS_FAISS_THREADS = env_int("EMBEDDINGS_FAISS_THREADS", 1)
# The thread pools of OpenMP (FAISS, torch) and OpenBLAS (NumPy) take their size from these
# variables when the libraries load, for every thread of the process: torch.set_num_threads() and
# faiss.omp_set_num_threads() alone leave the request threads of a gthread worker with one
# busy-waiting thread per core (measured: 4 clients at 1M products, 28 req/s). Set here, before
# any of them is imported; a value already in the environment wins.
if EMBEDDINGS_FAISS_THREADS and EMBEDDINGS_TORCH_THREADS:
    _threads = str(max(EMBEDDINGS_FAISS_THREADS, EMBEDDINGS_TORCH_THREADS))
    for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)
EMBEDDINGS_QUERY_CACHE_SIZE = env_int("EMBEDDINGS_QUERY_CACHE_SIZE", 1024)
# The admin's catalog map draws at most this many products (a sample stratified by category
# beyond it); its PCA layout and neighbour check take ~1 s at 5000 (README, Catalog map).
EMBEDDINGS_MAP_MAX_POINTS = env_int("EMBEDDINGS_MAP_MAX_POINTS", 5000)
# Suggestions on upload (admin product form): an uploaded image scoring at least this cosine
# against another product's image is flagged "nearly identical". 0.988 is where copies of a photo
# (re-encoded, resized, cropped, upscaled) were told from different products of the same type at
# precision 0.99 (0.9872, rounded up), on 2,000 myntra-224 products with the MobileNetV2 starter
# model; calibrate again for another model: scripts/calibrate_duplicates.py.
EMBEDDINGS_DUPLICATE_THRESHOLD = env_float("EMBEDDINGS_DUPLICATE_THRESHOLD", 0.988)
if not -1.0 <= EMBEDDINGS_DUPLICATE_THRESHOLD <= 1.0:
    raise ImproperlyConfigured(
        f"EMBEDDINGS_DUPLICATE_THRESHOLD={EMBEDDINGS_DUPLICATE_THRESHOLD}: use a cosine from -1 to 1."
    )
# Nearest products whose categories vote for an upload's suggested category.
EMBEDDINGS_SUGGEST_NEIGHBOURS = env_int("EMBEDDINGS_SUGGEST_NEIGHBOURS", 10)
if EMBEDDINGS_SUGGEST_NEIGHBOURS < 1:
    raise ImproperlyConfigured(
        f"EMBEDDINGS_SUGGEST_NEIGHBOURS={EMBEDDINGS_SUGGEST_NEIGHBOURS}: use 1 or more."
    )

# --- REST framework -------------------------------------------------------------------------


def _throttle_rate(name: str, default: str) -> str | None:
    value = os.environ.get(name, default).strip().lower()
    if value in ("", "off", "none", "0"):
        return None
    if not re.fullmatch(r"\d+/(s|sec|second|m|min|minute|h|hour|d|day)", value):
        raise ImproperlyConfigured(
            f"{name}={value!r} is not a rate: use e.g. 60/min, 5/s, 1000/hour, 10000/day, or off."
        )
    return value


REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAdminUser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "searchsite.api.PageNumberPagination",
    "PAGE_SIZE": 24,
    "EXCEPTION_HANDLER": "searchsite.api.exception_handler",
    # Rates of the throttles in searchsite/api.py, "N/s", "N/min", "N/hour" or "N/day"; "off"
    # turns one off. 429 with Retry-After when exceeded.
    "DEFAULT_THROTTLE_RATES": {
        "search_anon": _throttle_rate("THROTTLE_SEARCH_ANON", "60/min"),
        "search_user": _throttle_rate("THROTTLE_SEARCH_USER", "600/min"),
        "auth_token": _throttle_rate("THROTTLE_AUTH_TOKEN", "10/min"),
    },
    # Proxies in front of the app that append to X-Forwarded-For (1 behind nginx): throttles count
    # per client address. 0: the socket's address (a client cannot forge it).
    "NUM_PROXIES": env_int("THROTTLE_NUM_PROXIES", 0),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Shop search API",
    "DESCRIPTION": "Search a product catalog by text or image; read and manage products.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "COMPONENT_SPLIT_REQUEST": True,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    # open_clip logs every step of loading a model on the root logger at INFO; keep the root at
    # WARNING and this project's own loggers at LOG_LEVEL.
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_ROOT_LEVEL", "WARNING")},
    "loggers": {
        name: {"level": os.environ.get("LOG_LEVEL", "INFO")}
        for name in ("catalog", "embeddings", "searchsite", "celery", "django")
    },
}

LOGIN_URL = "admin:login"
