"""Catalog JSON: shapes only. Writes are done by catalog.services, called from the views."""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from django.urls import NoReverseMatch
from rest_framework import serializers

from searchsite.api import ApiError

from ..attributes import attributes_normalise
from ..models import Category, Product, ProductImage
from ..thumbnails import image_thumbnails
from ..validators import CODE_INVALID, UPLOAD_ERROR_STATUS, validate_image_upload

# The largest value a PositiveIntegerField holds in every database Django supports.
MAX_POSITION = 2_147_483_647


class ErrorBodySerializer(serializers.Serializer):
    code = serializers.CharField(
        help_text="Machine-readable, e.g. invalid, not_found, invalid_image."
    )
    message = serializers.CharField(help_text="A sentence a person can act on.")
    details = serializers.JSONField(
        required=False, help_text="Per-field errors, when there are any."
    )


class ErrorSerializer(serializers.Serializer):
    """The one error shape of the API (see searchsite.api)."""

    error = ErrorBodySerializer()


class ImageUploadField(serializers.FileField):
    """An uploaded image checked by catalog.validators.

    A rejection is raised as ApiError, not as a field error, so it keeps its own status:
    413 too large, 415 unsupported type, 400 corrupt or too many pixels.
    """

    def to_internal_value(self, data):
        file = super().to_internal_value(data)
        try:
            validate_image_upload(file)
        except DjangoValidationError as exc:
            code = exc.code or CODE_INVALID
            # Name the file: a create request may carry several.
            raise ApiError(
                f"{getattr(file, 'name', None) or 'upload'}: {exc.messages[0]}",
                code=code,
                status_code=UPLOAD_ERROR_STATUS.get(code, 400),
            ) from None
        return file


class CategorySerializer(serializers.ModelSerializer):
    class Meta:
        model = Category
        fields = ["id", "name", "slug"]


def thumbnails_json(image: ProductImage, request) -> dict[str, str]:
    """{"160": url, "320": url, ...}: the image's WebP thumbnails by width; {} until they are made
    (the embedding worker makes them). Row fields only: no storage access."""
    return {
        str(thumb.width): request.build_absolute_uri(thumb.url) if request else thumb.url
        for thumb in image_thumbnails(image)
    }


class ProductImageSerializer(serializers.ModelSerializer):
    url = serializers.SerializerMethodField()
    thumbnails = serializers.SerializerMethodField(
        help_text='Thumbnail URLs by width in pixels, e.g. {"160": "...", "320": "..."}; empty '
        "until the image has been processed. Widths above the original's are not made."
    )

    class Meta:
        model = ProductImage
        fields = [
            "id",
            "url",
            "width",
            "height",
            "thumbnails",
            "position",
            "alt_text",
            "index_status",
            "index_error",
        ]

    def get_url(self, obj: ProductImage) -> str | None:
        if not obj.image:
            return None
        request = self.context.get("request")
        url = obj.image.url
        return request.build_absolute_uri(url) if request else url

    def get_thumbnails(self, obj: ProductImage) -> dict[str, str]:
        return thumbnails_json(obj, self.context.get("request"))


class ProductSerializer(serializers.ModelSerializer):
    category = CategorySerializer(allow_null=True)
    images = ProductImageSerializer(many=True)
    url = serializers.SerializerMethodField(help_text="The product's page on the shop site.")
    currency = serializers.SerializerMethodField(
        help_text="ISO 4217 code of `price` (the shop's SHOP_CURRENCY setting)."
    )

    class Meta:
        model = Product
        fields = [
            "id",
            "title",
            "description",
            "price",
            "currency",
            "sku",
            "is_active",
            "category",
            "attributes",
            "boost",
            "stock",
            "popularity",
            "url",
            "images",
            "created_at",
            "updated_at",
        ]

    def get_currency(self, obj: Product) -> str:
        return settings.SHOP_CURRENCY

    def to_representation(self, obj: Product) -> dict:
        # The same JSON as ModelSerializer's field-by-field walk (a test compares the two), built
        # directly: a search page serialises 24 products with their images and this was a fifth
        # of a search request's CPU.
        fields = self.fields
        category = obj.category
        request = self.context.get("request")
        images = []
        for image in obj.images.all():
            url = image.image.url if image.image else None
            images.append(
                {
                    "id": image.id,
                    "url": request.build_absolute_uri(url) if request and url else url,
                    "width": image.width,
                    "height": image.height,
                    "thumbnails": thumbnails_json(image, request),
                    "position": image.position,
                    "alt_text": image.alt_text,
                    "index_status": image.index_status,
                    "index_error": image.index_error,
                }
            )
        return {
            "id": obj.id,
            "title": obj.title,
            "description": obj.description,
            "price": None if obj.price is None else fields["price"].to_representation(obj.price),
            "currency": settings.SHOP_CURRENCY,
            "sku": obj.sku,
            "is_active": obj.is_active,
            "category": None
            if category is None
            else {"id": category.id, "name": category.name, "slug": category.slug},
            "attributes": obj.attributes,
            "boost": obj.boost,
            "stock": obj.stock,
            "popularity": obj.popularity,
            "url": self.get_url(obj),
            "images": images,
            "created_at": fields["created_at"].to_representation(obj.created_at),
            "updated_at": fields["updated_at"].to_representation(obj.updated_at),
        }

    def full_representation(self, obj: Product) -> dict:
        """ModelSerializer's own representation (what ``to_representation`` must equal)."""
        return super().to_representation(obj)

    def get_url(self, obj: Product) -> str | None:
        try:
            path = obj.get_absolute_url()
        except NoReverseMatch:
            # The product pages are a separate part of the site; without them there is no URL.
            return None
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path


class ProductWriteSerializer(serializers.Serializer):
    """PUT replaces the fields (missing optional ones get their defaults); PATCH changes only
    the given ones. `category` is a category *name*, created if new; empty or null clears it."""

    title = serializers.CharField(max_length=255)
    description = serializers.CharField(allow_blank=True, required=False, default="")
    price = serializers.DecimalField(
        max_digits=10, decimal_places=2, min_value=0, allow_null=True, required=False, default=None
    )
    sku = serializers.CharField(
        max_length=64,
        required=False,
        allow_blank=True,
        help_text="Generated when left out on create.",
    )
    category = serializers.CharField(
        max_length=120, allow_blank=True, allow_null=True, required=False, default=None
    )
    # default=True also stops a multipart form that leaves the field out from meaning False.
    is_active = serializers.BooleanField(required=False, default=True)
    attributes = serializers.DictField(
        child=serializers.CharField(allow_blank=True, max_length=60),
        required=False,
        default=dict,
        help_text='Name: value pairs, e.g. {"colour": "red"}; stored lower-case.',
    )

    boost = serializers.FloatField(
        required=False,
        default=0.0,
        min_value=-10.0,
        max_value=10.0,
        help_text="Staff-set ranking boost (typically -1..1); weighs nothing until a ranking "
        "weight or a search's modifiers use it.",
    )
    stock = serializers.IntegerField(
        required=False,
        default=None,
        allow_null=True,
        min_value=0,
        help_text="Units in stock; null when the shop does not track stock.",
    )

    def validate_attributes(self, value: dict) -> dict:
        try:
            return attributes_normalise(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate_category(self, value: str | None) -> str | None:
        value = (value or "").strip()
        return value or None


class ProductCreateSerializer(ProductWriteSerializer):
    images = serializers.ListField(
        child=ImageUploadField(),
        required=False,
        default=list,
        max_length=20,
        help_text="Multipart only: one or more image files (repeat the field).",
    )


class ProductImageCreateSerializer(serializers.Serializer):
    image = ImageUploadField(
        help_text="JPEG, PNG, WebP, GIF, BMP or TIFF, at most MAX_UPLOAD_BYTES."
    )
    alt_text = serializers.CharField(max_length=255, allow_blank=True, required=False, default="")
    position = serializers.IntegerField(
        min_value=0,
        max_value=MAX_POSITION,
        required=False,
        allow_null=True,
        default=None,
        help_text="0 comes first. Defaults to after the last image.",
    )
