from __future__ import annotations

from decimal import Decimal

import factory
from django.core.files.uploadedfile import SimpleUploadedFile

from catalog.models import Category, Product, ProductImage
from tests.conftest import make_image


class CategoryFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Category
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"Category {n}")


class ProductFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Product

    title = factory.Sequence(lambda n: f"Product {n}")
    sku = factory.Sequence(lambda n: f"SKU-{n:05d}")
    price = Decimal("19.99")
    category = factory.SubFactory(CategoryFactory)


class ProductImageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = ProductImage

    product = factory.SubFactory(ProductFactory)
    image = factory.LazyFunction(
        lambda: SimpleUploadedFile("p.png", make_image(), content_type="image/png")
    )
