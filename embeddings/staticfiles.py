"""Static files that come from Python packages rather than from this repository.

``PlotlyJSFinder`` serves the plotly.js bundle that the ``plotly`` package ships
(``plotly/package_data/plotly.min.js``) as the static file ``embeddings/vendor/plotly.min.js``:
``runserver`` and the test live server find it through the finders, ``collectstatic`` copies it
into STATIC_ROOT for WhiteNoise. So the admin's catalog map works offline, with the version of
plotly.js that matches the installed package, and no 4.8 MB copy lives in the repository.
"""

from __future__ import annotations

import os
from importlib.util import find_spec

from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import Error
from django.core.files.storage import FileSystemStorage

PLOTLY_JS = "embeddings/vendor/plotly.min.js"


def _package_data_dir() -> str | None:
    spec = find_spec("plotly")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = os.path.join(next(iter(spec.submodule_search_locations)), "package_data")
    return folder if os.path.isfile(os.path.join(folder, "plotly.min.js")) else None


class PlotlyJSFinder(BaseFinder):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.folder = _package_data_dir()

    def check(self, **kwargs):
        if self.folder is None:
            return [
                Error(
                    "The plotly package (with its bundled plotly.min.js) is not installed.",
                    hint="pip install -e . installs it; the admin's catalog map needs it.",
                    id="embeddings.E001",
                )
            ]
        return []

    def find(self, path, find_all=False, **kwargs):
        if path != PLOTLY_JS or self.folder is None:
            return [] if find_all else None
        found = os.path.join(self.folder, "plotly.min.js")
        return [found] if find_all else found

    def list(self, ignore_patterns):
        if self.folder is None:
            return
        storage = FileSystemStorage(location=self.folder)
        storage.prefix = os.path.dirname(PLOTLY_JS)
        yield "plotly.min.js", storage
