"""Celery application. Configuration comes from Django settings (CELERY_* names)."""

import logging
import os
import time

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")

app = Celery("searchsite")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
# The warm-up below runs before a pool process reports itself up; Celery kills a process that
# takes longer than worker_proc_alive_timeout (default 4 s), and loading the model takes longer
# on a busy machine. (Set without reading app.conf, which would load the settings at import.)
app.conf.worker_proc_alive_timeout = 120.0

log = logging.getLogger("searchsite.celery")


@worker_process_init.connect
def warm_up_encoder(**kwargs) -> None:
    """Loads the model in each pool process when it starts, so the first upload after a worker
    (re)start is embedded as fast as the next ones instead of waiting for the model to load."""
    try:
        from PIL import Image

        from embeddings import runtime

        t = time.perf_counter()
        runtime.get_encoder().encode_images([Image.new("RGB", (32, 32), "white")])
        log.info("encoder warmed up in %.1f s", time.perf_counter() - t)
    except Exception:  # a worker that cannot warm up still loads the model on its first task
        log.exception("could not warm up the encoder; it will load on the first task")
