"""Catalog admin: products (with their images inline and a multi-file upload), categories.

The "Re-index selected products" action is added by embeddings/admin.py, because the catalog
never imports the embeddings app.
"""

from __future__ import annotations

from django.contrib import admin
from django.db.models import Count, Q, QuerySet
from django.http import HttpRequest
from django.utils.html import format_html

from . import services
from .forms import ProductAdminForm, ProductImageForm
from .models import Category, Product, ProductImage

THUMB_PX = 64


def image_thumbnail(image: ProductImage | None, size: int = THUMB_PX) -> str:
    if image is None or not image.image:
        return "-"
    return format_html(
        '<img src="{}" alt="{}" style="max-width:{}px;max-height:{}px;object-fit:contain" loading="lazy">',
        image.image.url,
        image.alt_text,
        size,
        size,
    )


class IndexStatusFilter(admin.SimpleListFilter):
    title = "image index status"
    parameter_name = "index"

    def lookups(self, request, model_admin):
        return [
            ("failed", "Has failed images"),
            ("pending", "Has images waiting"),
            ("indexed", "All images indexed"),
            ("none", "No images"),
        ]

    def queryset(self, request, queryset):
        value = self.value()
        if value in ("failed", "pending"):
            return queryset.filter(images__index_status=value).distinct()
        if value == "indexed":
            return (
                queryset.filter(images__isnull=False)
                .exclude(
                    images__index_status__in=[
                        ProductImage.IndexStatus.PENDING,
                        ProductImage.IndexStatus.FAILED,
                    ]
                )
                .distinct()
            )
        if value == "none":
            return queryset.filter(images__isnull=True)
        return queryset


class ProductImageInline(admin.TabularInline):
    model = ProductImage
    form = ProductImageForm
    extra = 0
    fields = [
        "preview",
        "image",
        "position",
        "alt_text",
        "index_status",
        "index_error",
        "indexed_at",
    ]
    readonly_fields = ["preview", "index_status", "index_error", "indexed_at"]
    ordering = ["position", "id"]

    @admin.display(description="preview")
    def preview(self, obj: ProductImage) -> str:
        return image_thumbnail(obj if obj.pk else None, size=96)


@admin.register(Product)
class ProductAdmin(admin.ModelAdmin):
    form = ProductAdminForm
    inlines = [ProductImageInline]
    list_display = [
        "thumbnail",
        "title",
        "sku",
        "category",
        "price",
        "is_active",
        "image_count",
        "index_summary",
    ]
    list_display_links = ["thumbnail", "title"]
    list_filter = ["category", "is_active", IndexStatusFilter]
    list_select_related = ["category"]
    search_fields = ["title", "sku"]
    list_per_page = 50
    # The embeddings app appends "Re-index selected products" (see embeddings/admin.py).
    actions: list = []
    fieldsets = [
        (None, {"fields": ["title", "sku", "category", "price", "is_active", "description"]}),
        ("Attributes", {"fields": ["attributes"]}),
        ("Ranking", {"fields": ["boost", "stock", "popularity"]}),
        ("Images", {"fields": ["add_images"]}),
    ]
    readonly_fields = ["popularity"]

    def get_queryset(self, request: HttpRequest) -> QuerySet[Product]:
        # One join counts all statuses; several Count()s on the same join do not multiply.
        return (
            super()
            .get_queryset(request)
            .annotate(
                n_images=Count("images"),
                n_indexed=Count(
                    "images", filter=Q(images__index_status=ProductImage.IndexStatus.INDEXED)
                ),
                n_failed=Count(
                    "images", filter=Q(images__index_status=ProductImage.IndexStatus.FAILED)
                ),
            )
            .prefetch_related("images")
        )

    @admin.display(description="image")
    def thumbnail(self, obj: Product) -> str:
        return image_thumbnail(obj.primary_image)

    @admin.display(description="images", ordering="n_images")
    def image_count(self, obj: Product) -> int:
        return obj.n_images

    @admin.display(description="search index")
    def index_summary(self, obj: Product) -> str:
        total, indexed, failed = obj.n_images, obj.n_indexed, obj.n_failed
        if total == 0:
            return "no images"
        pending = total - indexed - failed
        parts = [f"{indexed}/{total} indexed"]
        if pending:
            parts.append(f"{pending} waiting")
        if failed:
            parts.append(f"{failed} failed")
        return ", ".join(parts)

    def save_related(
        self, request: HttpRequest, form: ProductAdminForm, formsets, change: bool
    ) -> None:
        super().save_related(request, form, formsets, change)
        # After the inline formset, so new files are appended after the existing positions.
        for file in form.cleaned_data.get("add_images") or []:
            services.product_image_add(product=form.instance, file=file)

    def delete_model(self, request: HttpRequest, obj: Product) -> None:
        services.product_delete(product=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Product]) -> None:
        # One by one, through the service, so each image's delete signal reaches the index.
        for product in queryset:
            services.product_delete(product=product)


@admin.register(Category)
class CategoryAdmin(admin.ModelAdmin):
    list_display = ["name", "slug", "product_count"]
    search_fields = ["name", "slug"]
    prepopulated_fields = {"slug": ["name"]}

    def get_queryset(self, request: HttpRequest) -> QuerySet[Category]:
        return super().get_queryset(request).annotate(n_products=Count("products"))

    @admin.display(description="products", ordering="n_products")
    def product_count(self, obj: Category) -> int:
        return obj.n_products
