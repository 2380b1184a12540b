"""Shopper-facing catalog pages. "More like this" on the product page comes from the embeddings
app's template tag, so this module never imports embeddings (the dependency points one way)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_safe

from .selectors import product_get


@require_safe
def product_detail(request: HttpRequest, pk: int) -> HttpResponse:
    product = product_get(product_id=pk)
    if product is None:
        # Inactive products are hidden exactly like missing ones.
        raise Http404("No such product.")
    return render(request, "catalog/product_detail.html", {"product": product})
