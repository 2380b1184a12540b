"""Per-process singletons: the encoder and the live index, both created on first use.

Tests call ``reset()`` after changing settings.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from pathlib import Path

from django.conf import settings

from .encoder import ClipEncoder
from .engine.fulltext import FullText
from .engine.live import LiveIndex, snapshot_root
from .engine.snapshot import Snapshot, SnapshotError, current_base, open_snapshot

log = logging.getLogger(__name__)

_lock = threading.Lock()
_encoder: ClipEncoder | None = None
_encoder_key: tuple | None = None
_live: LiveIndex | None = None
_preloaded: Snapshot | None = None
_sync_thread: threading.Thread | None = None
_fulltext: FullText | None = None


def _apply_thread_settings() -> None:
    if settings.EMBEDDINGS_TORCH_THREADS:
        import torch

        torch.set_num_threads(settings.EMBEDDINGS_TORCH_THREADS)
    if settings.EMBEDDINGS_FAISS_THREADS:
        import faiss

        faiss.omp_set_num_threads(settings.EMBEDDINGS_FAISS_THREADS)


def get_encoder() -> ClipEncoder:
    global _encoder, _encoder_key
    key = (settings.EMBEDDINGS_MODEL, settings.EMBEDDINGS_PRETRAINED, settings.EMBEDDINGS_DEVICE)
    if _encoder is None or _encoder_key != key:
        with _lock:
            if _encoder is None or _encoder_key != key:
                _apply_thread_settings()
                _encoder = ClipEncoder(
                    settings.EMBEDDINGS_MODEL,
                    settings.EMBEDDINGS_PRETRAINED or None,
                    device=settings.EMBEDDINGS_DEVICE,
                    batch_size=settings.EMBEDDINGS_BATCH_SIZE,
                )
                _encoder_key = key
    return _encoder


def model_card(encoder: ClipEncoder | None = None) -> dict:
    """The JSON model card kept beside a checkpoint (``X.card.json`` or ``X.pt.card.json``)."""
    encoder = encoder or get_encoder()
    pretrained = encoder.spec.pretrained
    if not pretrained or not Path(pretrained).is_file():
        return {}
    path = Path(pretrained)
    for candidate in (path.with_suffix(".card.json"), Path(str(path) + ".card.json")):
        if candidate.is_file():
            return _read_card(candidate, candidate.stat().st_mtime_ns)
    return {}


@functools.lru_cache(maxsize=8)
def _read_card(path: Path, mtime_ns: int) -> dict:
    # Read once per file version: get_min_score() asks on every text search.
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        log.warning("Ignoring unreadable model card %s", path)
        return {}


def get_min_score() -> float | None:
    """Cosine score under which a text query's results count as "no good match".

    EMBEDDINGS_MIN_SCORE wins when set; otherwise the model card's calibrated ``min_score``;
    otherwise no threshold (a model nobody calibrated gets no arbitrary cut-off).
    """
    if settings.EMBEDDINGS_MIN_SCORE is not None:
        return settings.EMBEDDINGS_MIN_SCORE
    value = model_card().get("min_score")
    return float(value) if value is not None else None


def preload_for_fork() -> None:
    """Run in a pre-forking server's master (gunicorn ``preload_app``): loads the model's weights
    and opens (verifies and memory-maps) the current index base once, so every worker forked
    afterwards shares those pages instead of loading its own copy, and starts in well under a
    second. Opens no database connection and starts no threads (one torch/FAISS thread): what
    is per-process (the delta sync, the word index, warm-up) happens after the fork."""
    global _preloaded
    from django.db import connections

    encoder = get_encoder()
    model_id, dim = encoder.model_id, encoder.dim
    path = current_base(snapshot_root(model_id))
    if path is not None:
        try:
            _preloaded = open_snapshot(path, model_id=model_id, dim=dim)
        except SnapshotError as exc:
            log.warning("Not preloading index base %s: %s (workers will rebuild it)", path, exc)
    connections.close_all()


def get_live_index(*, sync: bool = True) -> LiveIndex:
    """This process's index of the configured model: the machine's current base (memory-mapped,
    built from the database when there is none), plus the changes since; then kept up to date
    (at most every EMBEDDINGS_SYNC_INTERVAL)."""
    global _live
    encoder = get_encoder()
    model_id = encoder.model_id
    live = _live
    if live is None or live.model_id != model_id:
        with _lock:
            live = _live
            if live is None or live.model_id != model_id:
                live = _open_live(model_id, encoder.dim)
                _live = live
    if sync:
        _keep_in_step(live)
    return live


def _keep_in_step(index) -> None:
    """Brings ``index`` (the vector or the word index) up to date at most every
    EMBEDDINGS_SYNC_INTERVAL. A serving process does it in one background thread, so no
    shopper's request waits for the change log; with an interval of 0 (tests, one-off
    commands) it happens here, before the caller reads."""
    interval = settings.EMBEDDINGS_SYNC_INTERVAL
    if interval <= 0:
        index.maybe_sync(interval)
        return
    global _sync_thread
    thread = _sync_thread
    if thread is None or not thread.is_alive():
        with _lock:
            if _sync_thread is None or not _sync_thread.is_alive():
                index.maybe_sync(interval)  # the first reader gets a fresh index
                _sync_thread = threading.Thread(target=_sync_loop, name="index-sync", daemon=True)
                _sync_thread.start()


def _sync_loop() -> None:
    from django.db import connections

    while True:
        time.sleep(max(settings.EMBEDDINGS_SYNC_INTERVAL, 0.05))
        for index in (_live, _fulltext):
            if index is None:
                continue
            try:
                index.maybe_sync(0)
            except Exception:  # the database is away, say: try again next round
                log.exception(
                    "Index sync failed; retrying in %.1f s", settings.EMBEDDINGS_SYNC_INTERVAL
                )
                connections.close_all()


def _open_live(model_id: str, dim: int) -> LiveIndex:
    root = snapshot_root(model_id)
    snap = _preloaded
    if snap is not None and snap.manifest.get("model_id") == model_id and snap.path.parent == root:
        # Mapped and verified by the master before the fork; a newer base is switched to at
        # the first sync.
        live = LiveIndex(model_id=model_id, dim=dim, root=root, snapshot=snap)
        live.sync()
        return live
    return LiveIndex.open(model_id=model_id, dim=dim, root=root)


def set_live_index(live: LiveIndex | None) -> None:
    global _live
    with _lock:
        _live = live


def get_fulltext(*, sync: bool = True) -> FullText:
    """This process's view of the machine's word index (EMBEDDINGS_INDEX_DIR/fulltext), built
    from the database when there is none; kept up to date at most every EMBEDDINGS_SYNC_INTERVAL
    (one process on the machine writes it, the others reload)."""
    global _fulltext
    root = Path(settings.EMBEDDINGS_INDEX_DIR) / "fulltext"
    fulltext = _fulltext
    if fulltext is None or fulltext.root != root:
        with _lock:
            fulltext = _fulltext
            if fulltext is None or fulltext.root != root:
                if fulltext is not None:
                    fulltext.close()
                fulltext = FullText(root)
                fulltext.sync()
                _fulltext = fulltext
    if sync:
        _keep_in_step(fulltext)
    return fulltext


def reset() -> None:
    """Forgets the encoder and indexes of this process (tests; model change)."""
    global _encoder, _encoder_key, _live, _fulltext, _preloaded
    with _lock:
        if _fulltext is not None:
            _fulltext.close()  # hands the word index's writer role to another process
        _encoder = _encoder_key = _live = _fulltext = _preloaded = None
