from django.urls import path
from rest_framework.authtoken.views import obtain_auth_token

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
    path("auth/token/", obtain_auth_token, name="auth-token"),
]
