from django.urls import path

from ..analytics.api import SearchClickView
from . import views

# Included into the "api-v1" namespace by searchsite/urls.py.
urlpatterns = [
    path("search/", views.SearchView.as_view(), name="search"),
    path("search/clicks/", SearchClickView.as_view(), name="search-click"),
    path("search/suggest/", views.SearchSuggestView.as_view(), name="search-suggest"),
    path("products/<int:pk>/similar/", views.ProductSimilarView.as_view(), name="product-similar"),
]
