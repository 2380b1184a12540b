"""Listens to the catalog: new or changed images are queued for embedding after the commit;
deleted images leave the index. (The catalog never imports this app.)"""

from __future__ import annotations

from django.db import transaction
from django.db.models.signals import post_delete, post_save, pre_delete
from django.dispatch import receiver

from catalog.models import Category, Product, ProductImage
from catalog.thumbnails import image_thumbnails_delete

from . import services

_STATUS_FIELDS = frozenset(
    {"index_status", "index_error", "indexed_at", "content_hash", "queued_at"}
)


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


@receiver(pre_delete, sender=ProductImage, dispatch_uid="embeddings.image_deleting")
def image_deleting(sender, instance: ProductImage, **kwargs):
    # Runs inside the delete's transaction, before it removes the image's embeddings. Taking the
    # row lock here makes a worker storing a vector for this image (services._store, under the
    # same lock) finish first, so its row is removed with the others; without it the delete could
    # remove the embeddings, then wait on the row, and commit over a new embedding that points at
    # the deleted image (a foreign-key error: an HTTP 500). A no-op on SQLite (one writer).
    ProductImage.objects.select_for_update().filter(id=instance.id).exists()


@receiver(post_delete, sender=ProductImage, dispatch_uid="embeddings.image_deleted")
def image_deleted(sender, instance: ProductImage, **kwargs):
    services.image_index_remove(image_id=instance.id, product_id=instance.product_id)
    storage, name = instance.image.storage, instance.image.name
    if name:
        # Remove the file only once the row is really gone.
        transaction.on_commit(lambda: storage.delete(name))
    product_id, image_id = instance.product_id, instance.id
    transaction.on_commit(lambda: image_thumbnails_delete(product_id=product_id, image_id=image_id))


@receiver(post_save, sender=Product, dispatch_uid="embeddings.product_saved")
def product_saved(sender, instance: Product, raw=False, **kwargs):
    if raw:
        return
    # Price, category, active flag and words live in the index beside the vectors.
    services.product_index_touch(product_id=instance.id)


@receiver(post_delete, sender=Product, dispatch_uid="embeddings.product_deleted")
def product_deleted(sender, instance: Product, **kwargs):
    services.product_index_touch(product_id=instance.id)


@receiver(post_save, sender=Category, dispatch_uid="embeddings.category_saved")
def category_saved(sender, instance: Category, created: bool, raw=False, **kwargs):
    if raw or created:
        return
    # Its name is among its products' words.
    services.products_index_touch(product_ids=instance.products.values_list("id", flat=True))


@receiver(pre_delete, sender=Category, dispatch_uid="embeddings.category_deleted")
def category_deleted(sender, instance: Category, **kwargs):
    # Its products lose their category by an UPDATE that sends no signal: note them now (the
    # rows are read after the commit, when they no longer have it).
    services.products_index_touch(product_ids=instance.products.values_list("id", flat=True))
