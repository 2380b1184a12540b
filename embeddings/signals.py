"""Listens to the catalog: new or changed images are queued for embedding after the commit;
deleted images leave the index. (The catalog never imports this app.)"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from catalog.models import ProductImage

from . import services

_STATUS_FIELDS = frozenset({"index_status", "index_error", "indexed_at", "content_hash"})


@receiver(post_save, sender=ProductImage, dispatch_uid="embeddings.image_saved")
def image_saved(
    sender, instance: ProductImage, created: bool, update_fields=None, raw=False, **kwargs
):
    if raw:  # loaddata
        return
    if update_fields is not None and set(update_fields) <= _STATUS_FIELDS:
        return
    # The task itself skips an image whose bytes did not change, so re-saving is cheap.
    services.images_enqueue(image_ids=[instance.id])


@receiver(post_delete, sender=ProductImage, dispatch_uid="embeddings.image_deleted")
def image_deleted(sender, instance: ProductImage, **kwargs):
    services.image_index_remove(image_id=instance.id, product_id=instance.product_id)
    storage, name = instance.image.storage, instance.image.name
    if name:
        # Remove the file only once the row is really gone.
        transaction.on_commit(lambda: storage.delete(name))
