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

SECRET_KEY = os.environ.get("SECRET_KEY", "dev-only-insecure-key-change-me")
DEBUG = env_bool("DEBUG", True)
ALLOWED_HOSTS = [
    h for h in os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",") if h
]
CSRF_TRUSTED_ORIGINS = [o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o]

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
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
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
    )
}
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
MEDIA_URL = os.environ.get("MEDIA_URL", "/media/")
MEDIA_ROOT = Path(os.environ.get("MEDIA_ROOT", DATA_DIR / "media"))
SERVE_MEDIA = env_bool("SERVE_MEDIA", True)

# Uploads: the largest image file accepted, and the largest decoded image (decompression bombs).
MAX_UPLOAD_BYTES = env_int("MAX_UPLOAD_BYTES", 10 * 1024 * 1024)
MAX_IMAGE_PIXELS = env_int("MAX_IMAGE_PIXELS", 40_000_000)
DATA_UPLOAD_MAX_MEMORY_SIZE = MAX_UPLOAD_BYTES + 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 2_621_440

# --- Celery -----------------------------------------------------------------------------
# With no broker configured, tasks run in-process (eager): the embedded set-up needs no Redis.
CELERY_BROKER_URL = os.environ.get("CELERY_BROKER_URL", "")
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", not CELERY_BROKER_URL)
if not CELERY_BROKER_URL:
    CELERY_BROKER_URL = "memory://"
CELERY_RESULT_BACKEND = os.environ.get("CELERY_RESULT_BACKEND") or None
CELERY_TASK_EAGER_PROPAGATES = env_bool("CELERY_TASK_EAGER_PROPAGATES", False)
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
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
}

# --- Shop ---------------------------------------------------------------------------------------
# ISO 4217 code of the prices in the catalog: shown on the pages ("$19.99", "12.50 CHF") and
# returned by the API beside each price.
SHOP_CURRENCY = os.environ.get("SHOP_CURRENCY", "USD").strip().upper()
if not re.fullmatch(r"[A-Z]{3}", SHOP_CURRENCY):
    raise ImproperlyConfigured(
        f"SHOP_CURRENCY={SHOP_CURRENCY!r} is not an ISO 4217 currency code; set it to e.g. USD, EUR or INR."
    )

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
# Text-query results scoring below this cosine similarity are dropped ("no good match"). Unset:
# the model card's calibrated min_score; -1 keeps everything.
EMBEDDINGS_MIN_SCORE = (
    env_float("EMBEDDINGS_MIN_SCORE", 0.0) if os.environ.get("EMBEDDINGS_MIN_SCORE") else None
)
# Hybrid retrieval: fuse products whose title/SKU contain the query's words with the vector
# results (reciprocal rank fusion). See `manage.py evaluate` for its measured effect.
EMBEDDINGS_HYBRID = env_bool("EMBEDDINGS_HYBRID", True)
EMBEDDINGS_HYBRID_WEIGHT = env_float("EMBEDDINGS_HYBRID_WEIGHT", 1.0)
EMBEDDINGS_HYBRID_RRF_K = env_int("EMBEDDINGS_HYBRID_RRF_K", 60)
# Products of each ranking (vectors, words) fused by hybrid search; rankings are computed to
# max(page end, this), not to the 1000-result cap.
EMBEDDINGS_RANK_WINDOW = env_int("EMBEDDINGS_RANK_WINDOW", 100)
# Compaction (celery beat's snapshot_index): a new base is built from the stored vectors when
# this many images changed since the current one, or it is older than EMBEDDINGS_COMPACT_AGE
# seconds and anything changed. Until then processes carry the changes as a small delta.
EMBEDDINGS_COMPACT_CHANGES = env_int("EMBEDDINGS_COMPACT_CHANGES", 5000)
EMBEDDINGS_COMPACT_AGE = env_float("EMBEDDINGS_COMPACT_AGE", 3600.0)
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

# --- REST framework -------------------------------------------------------------------------
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
# Image queries (API image search, the page's photo search): JPEGs are decoded at a reduced
# scale, other formats are decoded in full, so those above this many pixels are refused
# (400 image_too_large) before decoding: a 36 MP PNG would cost ~1 s of CPU per search.
EMBEDDINGS_QUERY_MAX_PIXELS = env_int("EMBEDDINGS_QUERY_MAX_PIXELS", 16_000_000)
# Seconds a photo search on the page stays usable (pagination, filters) after its last use. The
# photo's vector is kept in the Django cache under an unguessable token, never in a session.
SEARCH_PHOTO_TTL = env_int("SEARCH_PHOTO_TTL", 3600)

# Every serving process re-checks the checksums of the base it maps this often (seconds; 0: only
# when a base is opened, or when a search scores outside [-1, 1]). ~0.3 s per check at 1M images.
EMBEDDINGS_VERIFY_INTERVAL = env_float("EMBEDDINGS_VERIFY_INTERVAL", 600.0)
