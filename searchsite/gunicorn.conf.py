"""gunicorn settings for production: `gunicorn -c searchsite/gunicorn.conf.py searchsite.wsgi`.

Each worker loads the model, maps the machine's shared index base (every worker maps the same
files: one copy in memory) and applies the delta since, before taking traffic, so the first
shopper does not pay for it."""

import ctypes
import gc
import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
# The master imports the app, loads the model's weights and maps the index base once; workers
# fork from it and share those pages (torch alone is ~280 MB of private memory a process when
# each imports it). Nothing in the master starts threads or opens database connections
# (runtime.preload_for_fork); the per-process parts start in post_worker_init.
preload_app = os.environ.get("GUNICORN_PRELOAD", "true").lower() not in ("0", "false", "no")


def on_starting(server):
    if not preload_app:
        return
    from embeddings import runtime

    try:
        runtime.preload_for_fork()
    except Exception:  # workers still load everything themselves
        server.log.exception("could not preload the model and index; each worker will load them")
    # Objects made so far are the workers' shared, copy-on-write pages: keep the garbage
    # collector from writing to them (its headers) in every worker, which would copy them.
    gc.collect()
    gc.freeze()


def post_fork(server, worker):
    # Each request thread would otherwise get its own malloc arena (64 MB reserved apiece, and
    # fragmentation that never shrinks); two are plenty for a handful of threads.
    try:
        ctypes.CDLL("libc.so.6").mallopt(-8, 2)  # M_ARENA_MAX
    except (OSError, AttributeError):  # not glibc
        pass


def post_worker_init(worker):
    from embeddings import runtime

    try:
        runtime.get_encoder().encode_texts(["warm up"])
        live = runtime.get_live_index()
        runtime.get_fulltext()
        worker.log.info("search index ready: %d vectors, sequence %d", len(live), live.seq)
    except Exception:  # a worker that cannot warm up still serves catalog pages
        worker.log.exception("could not warm up the search index; it will load on first search")
