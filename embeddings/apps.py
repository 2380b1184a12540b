from django.apps import AppConfig


class EmbeddingsConfig(AppConfig):
    name = "embeddings"
    verbose_name = "Embeddings and search"

    def ready(self) -> None:
        # The project's own deploy checks (searchsite is not an app of its own).
        import searchsite.checks  # noqa: F401

        # The catalog never imports this app; this app listens to the catalog's models.
        from . import signals  # noqa: F401
