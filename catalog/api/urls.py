from django.urls import path
from rest_framework.authtoken.views import ObtainAuthToken

from searchsite.api import AuthTokenThrottle

from . import views

# Included into the "api-v1" namespace by searchsite/urls.py.
urlpatterns = [
    path("products/", views.ProductListCreateView.as_view(), name="product-list"),
    path("products/<int:pk>/", views.ProductDetailView.as_view(), name="product-detail"),
    path(
        "products/<int:pk>/images/",
        views.ProductImageCreateView.as_view(),
        name="product-image-list",
    ),
    path(
        "products/<int:pk>/images/<int:image_id>/",
        views.ProductImageDetailView.as_view(),
        name="product-image-detail",
    ),
    path("categories/", views.CategoryListView.as_view(), name="category-list"),
    # Throttled per address (THROTTLE_AUTH_TOKEN): each request is a password guess.
    path(
        "auth/token/",
        ObtainAuthToken.as_view(throttle_classes=[AuthTokenThrottle]),
        name="auth-token",
    ),
]
