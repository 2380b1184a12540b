from django.urls import path

from . import views

app_name = "catalog"
urlpatterns = [
    path("products/<int:pk>/", views.product_detail, name="product-detail"),
]
