"""The web application (gunicorn: `searchsite.wsgi`).

Loading this module marks the process as a web server: its database connections get the web's
statement timeout (DATABASE_STATEMENT_TIMEOUT, via settings.DATABASE_WEB_OPTIONS), so a request
waiting on a stuck database is cancelled and answers 503. Commands and Celery workers never load
it: rebuilding the index or re-embedding reads whole tables and must not be cut short."""

import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
application = get_wsgi_application()

# Connections read their OPTIONS each time they connect (django.db.connections shares this
# dict), so this holds for every connection the process opens from now on, whatever imported
# the settings first.
settings.DATABASES["default"].setdefault("OPTIONS", {}).update(settings.DATABASE_WEB_OPTIONS)
