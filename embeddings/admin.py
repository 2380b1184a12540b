"""Admin for the search index: re-index actions, per-image index status, and read-only views
of the stored vectors and the index change log (for staff and ops).

The catalog never imports this app, so the "Re-index selected products" action is attached
to the catalog's Product admin from here.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.text import Truncator

from catalog.admin import image_thumbnail
from catalog.models import Product, ProductImage
from catalog.thumbnails import image_thumbnails
from catalog.validators import validate_image_upload

from . import catalog_map, reconcile, runtime, services, upload_assist
from .encoder import ModelLoadError
from .engine.live import IndexDamagedError
from .health import describe_age, index_health
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

    def get_urls(self):
        # Before the default URLs: "<object_id>/" would otherwise take "index-health/".
        view = self.admin_site.admin_view(lambda request: index_health_view(request, self))
        return [
            path("index-health/", view, name="embeddings_index_health"),
            path(
                "catalog-map/",
                self.admin_site.admin_view(lambda request: catalog_map_view(request, self)),
                name="embeddings_catalog_map",
            ),
            *super().get_urls(),
        ]


# -- Index health page (issue 11, item 7) -----------------------------------------------------
# Admin > Product images > Index health (/admin/catalog/productimage/index-health/), linked from
# the admin index. The figures come from embeddings.health, shared with manage.py index_status;
# the two buttons call the same services as the re-index actions and the periodic reconcile.


def index_health_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> HttpResponse:
    """GET: the figures (staff who may view product images). POST ``action``: re-index the
    failed images or re-queue the pending ones (staff who may change product images)."""
    if not model_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    can_change = model_admin.has_change_permission(request)
    if request.method == "POST":
        if not can_change:
            raise PermissionDenied
        action = request.POST.get("action")
        if action == "reindex_failed":
            _reindex_failed(model_admin, request)
        elif action == "requeue_pending":
            _requeue_pending(model_admin, request)
        else:
            return HttpResponseBadRequest(
                f"Unknown action {action!r}: expected reindex_failed or requeue_pending.",
                content_type="text/plain",
            )
        return redirect("admin:embeddings_index_health")
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET, POST"})
    health = index_health()
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Index health",
        "opts": model_admin.opts,
        "health": health,
        "can_change": can_change,
        "oldest_pending_age": describe_age(health["freshness"]["oldest_pending_age_s"]),
        "snapshot_age": describe_age(health["snapshot_age_s"]),
        "batch": settings.EMBEDDINGS_RECONCILE_BATCH,
    }
    return TemplateResponse(request, "admin/embeddings/index_health.html", context)


def _images(n: int) -> str:
    return f"{n} image{'s' if n != 1 else ''}"


def _reindex_failed(model_admin: admin.ModelAdmin, request: HttpRequest) -> None:
    failed = ProductImage.objects.filter(index_status=ProductImage.IndexStatus.FAILED)
    total = failed.count()
    if not total:
        model_admin.message_user(request, "No failed images to re-index.", messages.WARNING)
        return
    # One batch per press, like the reconcile: a request never publishes an unbounded number of
    # tasks (each is a broker round trip).
    ids = list(
        failed.order_by("id").values_list("id", flat=True)[: settings.EMBEDDINGS_RECONCILE_BATCH]
    )
    with transaction.atomic():  # the tasks are published once the batch is marked pending
        queued = services.images_enqueue(image_ids=ids, force=True)
    left = total - queued
    model_admin.message_user(
        request,
        f"Queued {_images(queued)} that had failed for re-indexing."
        + (f" {left} more failed: press the button again." if left else ""),
        messages.SUCCESS,
    )


def _requeue_pending(model_admin: admin.ModelAdmin, request: HttpRequest) -> None:
    try:
        encoder = runtime.get_encoder()
        _ = encoder.dim  # loads the model: never queue work for a model that cannot load
        model_id = encoder.model_id
    except ModelLoadError as exc:
        model_admin.message_user(request, f"Nothing queued: {exc}", messages.ERROR)
        return
    # The periodic reconcile, run now and without its grace period: every pending image is
    # queued again, with the images that lost their vector or have an out-of-date one. A task
    # queued twice is harmless (the worker skips content that already has a vector).
    outcome = reconcile.images_reconcile(model_id=model_id, grace=timedelta(0))
    if not outcome.queued:
        model_admin.message_user(
            request,
            "Nothing to re-queue: no image is pending, lacks a vector or has an out-of-date one.",
            messages.WARNING,
        )
        return
    model_admin.message_user(
        request,
        f"Re-queued {_images(outcome.queued)} for embedding ({outcome.stuck_pending} pending, "
        f"{outcome.missing_vector} without a vector, {outcome.outdated_vector} with an "
        "out-of-date vector)."
        + (f" {outcome.left} more: press the button again." if outcome.left else ""),
        messages.SUCCESS,
    )


# -- end of the index health page -------------------------------------------------------------


# -- Catalog map (issue 11, item 8) -----------------------------------------------------------
# Admin > Product images > Catalog map (/admin/catalog/productimage/catalog-map/), linked from the
# admin index's Search index box. The layout and the mislabelled list come from
# embeddings.catalog_map (cached per index change sequence); the page draws them with plotly.js.


def catalog_map_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> HttpResponse:
    """GET: the map of the products' vectors of the serving model, for staff who may view
    products. A model that cannot load, or no vectors yet, is a message on the page."""
    product_admin = model_admin.admin_site.get_model_admin(Product)
    if not product_admin.has_view_or_change_permission(request):
        raise PermissionDenied
    if request.method != "GET":
        return HttpResponse(status=405, headers={"Allow": "GET"})
    context = {
        **model_admin.admin_site.each_context(request),
        "title": "Catalog map",
        "opts": Product._meta,
        "neighbours": catalog_map.NEIGHBOURS,
    }
    try:
        encoder = runtime.get_encoder()
        _ = encoder.dim  # loads the model: its id names the vectors to map
        context["model_id"] = encoder.model_id
    except ModelLoadError as exc:
        context["error"] = str(exc)
        return TemplateResponse(request, "admin/embeddings/catalog_map.html", context)
    cmap = catalog_map.catalog_map(model_id=context["model_id"])
    if cmap is not None:
        explained = [round(100 * share, 1) for share in cmap.explained]
        context.update(
            map=cmap,
            explained=explained,
            data={**catalog_map.catalog_map_points(cmap), "explained": explained},
        )
    return TemplateResponse(request, "admin/embeddings/catalog_map.html", context)


# -- end of the catalog map --------------------------------------------------------------------


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


# -- Search analytics report (issue 11, item 9) and bulk import (issue 11, item 5) -------------
# Registered by embeddings/analytics/admin.py (Admin > Embeddings > Search analytics) and
# embeddings/admin_import.py (Admin > Embeddings > Catalog imports); imported here because
# Django's admin autodiscovery loads only this module.
from . import admin_import as _import_admin  # noqa: E402, F401
from .analytics import admin as _analytics_admin  # noqa: E402, F401

# -- Suggestions on upload (issue 11, item 6) --------------------------------------------------
# On the product add/change form, choosing image files asks
# /admin/catalog/product/upload-assist/ (POST, one file) for the products with a nearly identical
# image, the suggested category and attributes (embeddings.upload_assist); upload-assist.js
# shows them as warnings and "accept" links. Saving is never blocked. The change page itself warns (a
# message on every GET) while any of the product's stored vectors has a near-duplicate.
# The catalog cannot import this app, so the registered ProductAdmin instance gets a subclass
# that adds the media, the URL and the warning; its class is swapped rather than registering a
# new instance, so everything other blocks attached to the instance (actions) stays.


def _json_error(message: str, status: int) -> JsonResponse:
    return JsonResponse({"error": message}, status=status)


def _duplicate_json(request: HttpRequest, dups: list[upload_assist.Duplicate]) -> list[dict]:
    products = upload_assist.duplicate_products(dups)
    out = []
    for dup in dups:
        product = products.get(dup.product_id)
        if product is None:  # deleted since the index saw it
            continue
        image = upload_assist.duplicate_image(product, dup.image_id)
        thumbs = image_thumbnails(image) if image is not None else []
        thumbnail = thumbs[0].url if thumbs else (image.image.url if image else None)
        out.append(
            {
                "product_id": product.pk,
                "title": product.title,
                "score": round(dup.score, 4),
                "admin_url": reverse("admin:catalog_product_change", args=[product.pk]),
                "thumbnail": thumbnail,
            }
        )
    return out


def upload_assist_view(request: HttpRequest, model_admin: admin.ModelAdmin) -> HttpResponse:
    """POST ``image`` (one file) and optionally ``product_id`` (the product being edited, left
    out of the answer): JSON ``{duplicates: [...], category: {...} | null, threshold}``.
    Staff who may add or change products; a bad file is a 400 with a message."""
    if not (model_admin.has_add_permission(request) or model_admin.has_change_permission(request)):
        return _json_error("You may not add or change products.", 403)
    if request.method != "POST":
        return HttpResponse(status=405, headers={"Allow": "POST"})
    file = request.FILES.get("image")
    if file is None:
        return _json_error("Send one image file in the field 'image'.", 400)
    raw_id = request.POST.get("product_id") or ""
    if raw_id and not raw_id.isdigit():
        return _json_error(f"product_id must be a product's number, not {raw_id!r}.", 400)
    product_id = int(raw_id) if raw_id else None
    try:
        validate_image_upload(file)
        vector = upload_assist.upload_vector(data=file.read())
    except ValidationError as exc:
        return _json_error(f"{file.name}: {exc.messages[0]}", 400)
    except upload_assist.UploadAssistError as exc:
        return _json_error(f"{file.name}: {exc}", 400)
    except ModelLoadError as exc:
        return _json_error(f"No suggestions: {exc}", 503)
    try:
        dups = upload_assist.near_duplicates(vector=vector, exclude_product_id=product_id)
        category = upload_assist.category_suggest(vector=vector, exclude_product_id=product_id)
        attributes = upload_assist.attributes_suggest(vector=vector, exclude_product_id=product_id)
    except IndexDamagedError as exc:
        return _json_error(str(exc), 503)
    return JsonResponse(
        {
            "duplicates": _duplicate_json(request, dups),
            "category": None
            if category is None
            else {
                "id": category.category_id,
                "name": category.name,
                "confidence": round(category.confidence, 3),
                "method": category.method,
            },
            "attributes": [
                {"name": a.name, "value": a.value, "confidence": round(a.confidence, 3)}
                for a in attributes
            ],
            "threshold": upload_assist.duplicate_threshold(),
        }
    )


def _duplicate_warning(product_admin: admin.ModelAdmin, request: HttpRequest, pk: int) -> None:
    try:
        found = upload_assist.product_duplicates(product_id=pk)
    except (ModelLoadError, IndexDamagedError):
        return  # the index health page reports these; the form still works
    dups = [d for item in found for d in item.duplicates]
    if not dups:
        return
    products = upload_assist.duplicate_products(dups)
    best: dict[int, float] = {}
    for dup in dups:
        best[dup.product_id] = max(best.get(dup.product_id, -1.0), dup.score)
    links = format_html_join(
        ", ",
        '<a href="{}" class="upload-assist-duplicate">{}</a> ({})',
        (
            (reverse("admin:catalog_product_change", args=[pid]), products[pid].title, f"{s:.3f}")
            for pid, s in sorted(best.items(), key=lambda kv: -kv[1])
            if pid in products
        ),
    )
    n = len(found)
    product_admin.message_user(
        request,
        format_html(
            "{} of this product's images {} nearly identical to an image of: {}.",
            n,
            "is" if n == 1 else "are",
            links,
        ),
        messages.WARNING,
    )


def _attach_upload_assist() -> None:
    product_admin = admin.site.get_model_admin(Product)
    base = type(product_admin)
    if getattr(base, "upload_assist", False):
        return

    class ProductAdminWithUploadAssist(base):  # type: ignore[valid-type, misc]
        upload_assist = True

        class Media:
            js = ["embeddings/upload-assist.js"]
            css = {"all": ["embeddings/upload-assist.css"]}

        def get_urls(self):
            view = self.admin_site.admin_view(lambda request: upload_assist_view(request, self))
            # Before the default URLs: "<object_id>/" would otherwise take "upload-assist/".
            return [
                path("upload-assist/", view, name="catalog_product_upload_assist"),
                *super().get_urls(),
            ]

        def change_view(self, request, object_id, form_url="", extra_context=None):
            if request.method == "GET" and str(object_id).isdigit():
                _duplicate_warning(self, request, int(object_id))
            return super().change_view(request, object_id, form_url, extra_context)

    ProductAdminWithUploadAssist.__name__ = base.__name__
    ProductAdminWithUploadAssist.__qualname__ = base.__qualname__
    product_admin.__class__ = ProductAdminWithUploadAssist


_attach_upload_assist()

# -- end of suggestions on upload ---------------------------------------------------------------
