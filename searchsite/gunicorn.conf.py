"""gunicorn settings for production: `gunicorn -c searchsite/gunicorn.conf.py searchsite.wsgi`.

Each worker loads the model and its index (snapshot + delta) before taking traffic, so the
first shopper does not pay for it."""

import os

bind = os.environ.get("GUNICORN_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("GUNICORN_WORKERS", "2"))
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "60"))
preload_app = False  # torch and FAISS state must be created after the fork


def post_worker_init(worker):
    from embeddings import runtime

    try:
        runtime.get_encoder().encode_texts(["warm up"])
        live = runtime.get_live_index()
        worker.log.info("search index ready: %d vectors, sequence %d", len(live), live.seq)
    except Exception:  # a worker that cannot warm up still serves catalog pages
        worker.log.exception("could not warm up the search index; it will load on first search")
