"""Catalog REST endpoints. Reads are public; writes need a staff user. The views parse and
shape; catalog.services does the writing and catalog.selectors the reading."""

from __future__ import annotations

import django_filters
from django import forms
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema
from rest_framework import generics, mixins, status
from rest_framework.exceptions import NotFound
from rest_framework.parsers import FormParser, JSONParser, MultiPartParser
from rest_framework.permissions import SAFE_METHODS, BasePermission
from rest_framework.request import Request
from rest_framework.response import Response

from .. import selectors, services
from ..models import Category, Product, ProductImage
from .pagination import ProductPagination
from .schema import errors
from .serializers import (
    CategorySerializer,
    ProductCreateSerializer,
    ProductImageCreateSerializer,
    ProductImageSerializer,
    ProductSerializer,
    ProductWriteSerializer,
)

TAG = "catalog"


NO_PRODUCT = "No such product (inactive products too, except for staff): `not_found`."


class IsStaffOrReadOnly(BasePermission):
    """Anyone may read; only staff may write. Anonymous writes get 401, non-staff 403."""

    def has_permission(self, request: Request, view) -> bool:
        if request.method in SAFE_METHODS:
            return True
        return bool(request.user and request.user.is_staff)


def _is_staff(request: Request) -> bool:
    return bool(getattr(request.user, "is_staff", False))


def _product_or_404(request: Request, product_id: int) -> Product:
    # Staff also reach inactive products (to edit them); shoppers only see active ones.
    product = selectors.product_get(product_id=product_id, include_inactive=_is_staff(request))
    if product is None:
        raise NotFound(f"There is no product with id {product_id}.")
    return product


def _category_fields(data: dict) -> dict:
    """Turns the `category` name of a write into a Category (created if new) or None."""
    if "category" in data:
        name = data.pop("category")
        data["category"] = services.category_get_or_create(name=name) if name else None
    return data


def _product_response(request: Request, product_id: int, status_code: int = 200) -> Response:
    # Re-read: background indexing may already have updated the images' status.
    product = selectors.product_get(product_id=product_id, include_inactive=True)
    return Response(
        ProductSerializer(product, context={"request": request}).data, status=status_code
    )


class ProductFilterForm(forms.Form):
    def clean(self):
        cleaned = super().clean()
        low, high = cleaned.get("price_min"), cleaned.get("price_max")
        if low is not None and high is not None and low > high:
            # The same message as the search endpoint's (embeddings.api.serializers).
            self.add_error(
                "price_min", f"price_min ({low}) is greater than price_max ({high}); swap them."
            )
        return cleaned


class ProductFilter(django_filters.FilterSet):
    """Parses the shopper filters; catalog.selectors.product_filter applies them (the same
    rules as the search pages). An upside-down price range is a 400, as on search."""

    category = django_filters.CharFilter(method="noop", help_text="Category slug, e.g. `t-shirts`.")
    price_min = django_filters.NumberFilter(method="noop", help_text="Lowest price, inclusive.")
    price_max = django_filters.NumberFilter(method="noop", help_text="Highest price, inclusive.")

    class Meta:
        model = Product
        fields: list[str] = []
        form = ProductFilterForm

    def noop(self, queryset, name, value):  # filtering happens in filter_queryset
        return queryset

    def filter_queryset(self, queryset):
        data = self.form.cleaned_data
        return selectors.product_filter(
            queryset,
            category=data.get("category") or None,
            price_min=data.get("price_min"),
            price_max=data.get("price_max"),
        )


@extend_schema(tags=[TAG])
class ProductListCreateView(mixins.ListModelMixin, generics.GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    serializer_class = ProductSerializer
    filterset_class = ProductFilter
    pagination_class = ProductPagination

    def get_queryset(self) -> QuerySet[Product]:
        return selectors.product_queryset(include_inactive=_is_staff(self.request))

    @extend_schema(
        summary="List products",
        description="Active products, newest first (staff also see inactive ones). "
        "`page` from 1 (past the last page: 404), `page_size` 1..100; `price_min` <= `price_max`.",
        responses={
            200: ProductSerializer(many=True),
            **errors(
                400,
                404,
                described={
                    400: "A bad filter or paging parameter (`error.details` names it), or "
                    "price_min > price_max: `invalid`.",
                    404: "The page is past the last page: `not_found`.",
                },
            ),
        },
    )
    def get(self, request: Request, *args, **kwargs) -> Response:
        return self.list(request, *args, **kwargs)

    @extend_schema(
        summary="Create a product (staff)",
        description="JSON, or multipart with one or more `images` files. `category` is a "
        "category name, created if new. The images are indexed in the background.",
        request={
            "application/json": ProductWriteSerializer,
            "multipart/form-data": ProductCreateSerializer,
        },
        responses={201: ProductSerializer, **errors(400, 403, 413, 415)},
    )
    def post(self, request: Request, *args, **kwargs) -> Response:
        serializer = ProductCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        product = services.product_create(**_category_fields(dict(serializer.validated_data)))
        return _product_response(request, product.pk, status.HTTP_201_CREATED)


@extend_schema(tags=[TAG])
class ProductDetailView(generics.GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    parser_classes = [JSONParser, MultiPartParser, FormParser]
    serializer_class = ProductSerializer
    queryset = Product.objects.none()  # for the schema; lookups go through the selector

    @extend_schema(
        summary="Get a product",
        responses={200: ProductSerializer, **errors(404, described={404: NO_PRODUCT})},
    )
    def get(self, request: Request, pk: int) -> Response:
        product = _product_or_404(request, pk)
        return Response(ProductSerializer(product, context={"request": request}).data)

    @extend_schema(
        summary="Replace a product's fields (staff)",
        description="Fields left out get their defaults (sku and images are kept).",
        request=ProductWriteSerializer,
        responses={
            200: ProductSerializer,
            **errors(400, 403, 404, 413, 415, described={404: NO_PRODUCT}),
        },
    )
    def put(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=False)

    @extend_schema(
        summary="Change some of a product's fields (staff)",
        request=ProductWriteSerializer,
        responses={
            200: ProductSerializer,
            **errors(400, 403, 404, 413, 415, described={404: NO_PRODUCT}),
        },
    )
    def patch(self, request: Request, pk: int) -> Response:
        return self._update(request, pk, partial=True)

    @extend_schema(
        summary="Delete a product (staff)",
        description="Its images leave the search index.",
        responses={204: None, **errors(403, 404, described={404: NO_PRODUCT})},
    )
    def delete(self, request: Request, pk: int) -> Response:
        services.product_delete(product=_product_or_404(request, pk))
        return Response(status=status.HTTP_204_NO_CONTENT)

    def _update(self, request: Request, pk: int, *, partial: bool) -> Response:
        product = _product_or_404(request, pk)
        serializer = ProductWriteSerializer(data=request.data, partial=partial)
        serializer.is_valid(raise_exception=True)
        services.product_update(
            product=product, **_category_fields(dict(serializer.validated_data))
        )
        return _product_response(request, product.pk)


@extend_schema(tags=[TAG])
class ProductImageCreateView(generics.GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    parser_classes = [MultiPartParser, FormParser]
    serializer_class = ProductImageCreateSerializer
    queryset = ProductImage.objects.none()

    @extend_schema(
        summary="Add an image to a product (staff)",
        request={"multipart/form-data": ProductImageCreateSerializer},
        responses={
            201: ProductImageSerializer,
            **errors(400, 403, 404, 413, 415, described={404: NO_PRODUCT}),
        },
    )
    def post(self, request: Request, pk: int) -> Response:
        product = _product_or_404(request, pk)
        serializer = ProductImageCreateSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        data = serializer.validated_data
        image = services.product_image_add(
            product=product,
            file=data["image"],
            position=data["position"],
            alt_text=data["alt_text"],
        )
        image.refresh_from_db()  # background indexing may already have run
        return Response(
            ProductImageSerializer(image, context={"request": request}).data,
            status=status.HTTP_201_CREATED,
        )


@extend_schema(tags=[TAG])
class ProductImageDetailView(generics.GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    serializer_class = ProductImageSerializer
    queryset = ProductImage.objects.none()

    @extend_schema(
        summary="Remove an image from a product (staff)",
        description="The image leaves the search index.",
        responses={
            204: None,
            **errors(403, 404, described={404: "No such product, or it has no such image."}),
        },
    )
    def delete(self, request: Request, pk: int, image_id: int) -> Response:
        product = _product_or_404(request, pk)
        image = next((img for img in product.images.all() if img.pk == image_id), None)
        if image is None:
            raise NotFound(f"Product {pk} has no image with id {image_id}.")
        services.product_image_delete(image=image)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema(tags=[TAG])
class CategoryListView(generics.GenericAPIView):
    permission_classes = [IsStaffOrReadOnly]
    serializer_class = CategorySerializer
    queryset = Category.objects.none()
    pagination_class = None  # a shop has few categories: all of them, in one list

    @extend_schema(
        summary="List all categories",
        responses={200: CategorySerializer(many=True), **errors()},
    )
    def get(self, request: Request) -> Response:
        return Response(CategorySerializer(selectors.category_list(), many=True).data)
