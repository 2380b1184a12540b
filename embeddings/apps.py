from django.apps import AppConfig


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    verbose_name = "Embeddings and search"

    def ready(self) -> None:
        # The catalog never imports this app; this app listens to the catalog's models.
        from . import signals  # noqa: F401
