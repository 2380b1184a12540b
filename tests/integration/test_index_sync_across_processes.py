"""Two processes serve one memory-mapped base; what one writes becomes searchable in the other
after a sync that applies only the delta (no rebuild), and a new base written by one (compaction)
is picked up by the other."""

from __future__ import annotations

import json
import subprocess

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog import services as catalog_services
from embeddings import runtime, services
from embeddings.models import IndexChange
from tests.conftest import make_image

from .conftest import child_env, manage_py, stop

pytestmark = [pytest.mark.integration, pytest.mark.django_db(transaction=True)]

# Runs in the other process (manage.py shell -c): builds its own index from the database once,
# then answers one JSON command per stdin line with a *sync* (never a rebuild).
CHILD = r"""
import json, os, sys
from embeddings.models import ImageEmbedding
from embeddings.engine.live import LiveIndex

model_id, dim = os.environ["CHILD_MODEL_ID"], int(os.environ["CHILD_DIM"])
live = LiveIndex.open(model_id=model_id, dim=dim)
base = live.base_path
print(json.dumps({"seq": live.seq, "count": len(live), "base": str(base)}), flush=True)
for line in sys.stdin:
    cmd = json.loads(line)
    applied = live.sync()
    top = None
    if cmd.get("query_image_id"):
        vec = ImageEmbedding.objects.get(image_id=cmd["query_image_id"], model_id=model_id).array
        hits = live.search(vec, k=1)
        top = hits[0].image_id if hits else None
    print(json.dumps({"applied": applied, "seq": live.seq, "count": len(live), "top": top,
                      "ids": sorted(int(i) for i in live.store.image_ids()),
                      "base": str(live.base_path),
                      "same_index_object": live.base_path == base}), flush=True)
"""


def _product(title, color, shape):
    return catalog_services.product_create(
        title=title, images=[SimpleUploadedFile(f"{title}.png", make_image(color, shape=shape))]
    )


def _ask(proc, payload) -> dict:
    proc.stdin.write(json.dumps(payload) + "\n")
    proc.stdin.flush()
    return _reply(proc)


def _reply(proc) -> dict:
    """The child's next JSON line (anything else it prints is skipped)."""
    while True:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"the other process exited: {proc.stderr.read()[-4000:]}")
        if line.startswith("{"):
            return json.loads(line)


def test_a_change_written_by_one_process_is_applied_by_the_others_delta_sync(postgres_db, settings):
    first = _product("Red circle tee", (220, 20, 20), "circle")  # embedded here (eager)
    encoder = runtime.get_encoder()
    mine = services.index_rebuild(progress=False)
    env = child_env(settings, CHILD_MODEL_ID=encoder.model_id, CHILD_DIM=str(encoder.dim))
    proc = subprocess.Popen(
        manage_py("shell", "-v", "0", "-c", CHILD),
        env=env,
        text=True,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        start = _reply(proc)
        assert start["count"] == 1
        assert start["base"] == str(mine.base_path), "both processes map the same base"

        # This process writes a new product; the other one finds it after one delta sync.
        second = _product("Blue square tee", (20, 20, 220), "square")
        second_image = second.images.get().id
        latest = IndexChange.objects.order_by("-id").values_list("id", flat=True).first()
        written = IndexChange.objects.filter(id__gt=start["seq"]).count()
        reply = _ask(proc, {"query_image_id": second_image})
        assert reply["top"] == second_image
        assert reply["applied"] == written <= 3, "only the new changes are read"
        assert reply["seq"] == latest > start["seq"]
        assert reply["count"] == 2 and reply["same_index_object"]

        # A delete travels the same way.
        first_image = first.images.get().id
        catalog_services.product_delete(product=first)
        reply = _ask(proc, {})
        assert 1 <= reply["applied"] <= 3
        assert first_image not in reply["ids"] and reply["ids"] == [second_image]
        assert reply["same_index_object"]

        # Compaction here: the other process switches to the new base at its next sync.
        new_base = services.index_snapshot_write(force=True)
        reply = _ask(proc, {"query_image_id": second_image})
        assert reply["base"] == str(new_base) and not reply["same_index_object"]
        assert reply["ids"] == [second_image] and reply["top"] == second_image
    finally:
        proc.stdin.close()
        stop(proc)
