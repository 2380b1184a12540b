"""Admin for the search index: re-index actions, per-image index status, and read-only views
of the stored vectors and the index change log (for staff and ops).

The catalog never imports this app, so the "Re-index selected products" action is attached
to the catalog's Product admin from here.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.text import Truncator

from catalog.admin import image_thumbnail
from catalog.models import Product, ProductImage

from . import services
from .models import ImageEmbedding, IndexChange, IndexChangePrune


def _queued_message(
    modeladmin: admin.ModelAdmin, request: HttpRequest, n_images: int, what: str
) -> None:
    if n_images:
        modeladmin.message_user(
            request,
            f"Queued {n_images} image{'s' if n_images != 1 else ''} of {what} for re-indexing.",
            messages.SUCCESS,
        )
    else:
        modeladmin.message_user(
            request, f"The selected {what} have no images to index.", messages.WARNING
        )


@admin.action(description="Re-index selected products", permissions=["change"])
def reindex_products(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[Product]
) -> None:
    product_ids = list(queryset.values_list("pk", flat=True))
    image_ids = ProductImage.objects.filter(product_id__in=product_ids).values_list("id", flat=True)
    # force: staff re-index to repair something; do not skip images whose bytes are unchanged.
    queued = services.images_enqueue(image_ids=image_ids, force=True)
    n_products = len(product_ids)
    _queued_message(
        modeladmin, request, queued, f"{n_products} product{'s' if n_products != 1 else ''}"
    )


@admin.action(description="Re-index selected images", permissions=["change"])
def reindex_images(
    modeladmin: admin.ModelAdmin, request: HttpRequest, queryset: QuerySet[ProductImage]
) -> None:
    queued = services.images_enqueue(image_ids=queryset.values_list("id", flat=True), force=True)
    _queued_message(modeladmin, request, queued, "the selection")


def _attach_product_actions() -> None:
    product_admin = admin.site.get_model_admin(Product)
    current = list(product_admin.actions or [])
    if reindex_products not in current:
        product_admin.actions = [*current, reindex_products]


_attach_product_actions()


@admin.register(ProductImage)
class ProductImageAdmin(admin.ModelAdmin):
    """Every image with its index status: where staff find and retry failed images."""

    list_display = ["id", "preview", "product", "position", "index_status", "error", "indexed_at"]
    list_display_links = ["id", "preview"]
    list_filter = ["index_status"]
    list_select_related = ["product"]
    search_fields = ["product__title", "product__sku", "index_error"]
    readonly_fields = [
        "product",
        "preview",
        "index_status",
        "index_error",
        "indexed_at",
        "content_hash",
    ]
    fields = [
        "product",
        "preview",
        "position",
        "alt_text",
        "index_status",
        "index_error",
        "indexed_at",
        "content_hash",
    ]
    actions = [reindex_images]
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        # Images are added on their product's page (or through the API), with upload checks.
        return False

    @admin.display(description="preview")
    def preview(self, obj: ProductImage) -> str:
        return image_thumbnail(obj)

    @admin.display(description="error")
    def error(self, obj: ProductImage) -> str:
        return Truncator(obj.index_error).chars(120)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows written only by the indexing machinery: viewable, never edited by hand."""

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj=None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj=None) -> bool:
        # Never from this model's own pages. But deleting a product or image in the admin also
        # deletes its vectors (cascade), and Django asks this admin about them; refusing there
        # would block that delete.
        match = getattr(request, "resolver_match", None)
        own_page = bool(
            match
            and (match.url_name or "").startswith(f"{self.opts.app_label}_{self.opts.model_name}_")
        )
        return not own_page and super().has_delete_permission(request, obj)


@admin.register(ImageEmbedding)
class ImageEmbeddingAdmin(ReadOnlyAdmin):
    list_display = ["id", "image_id", "product", "model_id", "dim", "short_hash", "updated_at"]
    list_filter = ["model_id"]
    search_fields = ["=image__id", "image__product__title", "model_id"]
    list_select_related = ["image__product"]
    # The raw vector bytes mean nothing to a person; dim and model say what it is.
    exclude = ["vector"]

    @admin.display(description="product")
    def product(self, obj: ImageEmbedding) -> Product:
        return obj.image.product

    @admin.display(description="content hash")
    def short_hash(self, obj: ImageEmbedding) -> str:
        return obj.content_hash[:12]


@admin.register(IndexChange)
class IndexChangeAdmin(ReadOnlyAdmin):
    list_display = ["id", "op", "image_id", "product_id", "model_id", "created_at"]
    list_filter = ["op", "model_id"]
    search_fields = ["=image_id", "=product_id"]
    date_hierarchy = "created_at"


@admin.register(IndexChangePrune)
class IndexChangePruneAdmin(ReadOnlyAdmin):
    list_display = ["pruned_through", "deleted", "created_at"]
