from django.urls import path

from . import views

app_name = "embeddings"
urlpatterns = [
    path("", views.search, name="search"),
]
