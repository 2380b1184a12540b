"""PostgreSQL only: trigram indexes so the lexical half of hybrid search (``icontains`` on title
and SKU) does not scan the whole product table. At 1M products a word no title contains took
~570 ms and a SKU lookup ~850 ms as a sequential scan; with these indexes 1-20 ms
(scripts/bench_lexical.py). Other databases (SQLite, the embedded default) are left as they are.

The expressions match what Django generates for ``icontains`` on PostgreSQL:
``UPPER("title"::text) LIKE UPPER('%word%')``.
"""

import logging

from django.db import DatabaseError, migrations, transaction

log = logging.getLogger(__name__)

INDEXES = {
    "catalog_product_title_trgm": "UPPER((title)::text)",
    "catalog_product_sku_trgm": "UPPER((sku)::text)",
}


def create_indexes(apps, schema_editor):
    connection = schema_editor.connection
    if connection.vendor != "postgresql":
        return
    try:
        with transaction.atomic(using=connection.alias):
            schema_editor.execute("CREATE EXTENSION IF NOT EXISTS pg_trgm")
    except DatabaseError as exc:
        # Not fatal: search still works, it only scans. Say how to get the speed back.
        log.warning(
            "Could not enable the pg_trgm extension (%s). Lexical search will scan the product "
            "table; ask the database owner to run CREATE EXTENSION pg_trgm; then run "
            "`manage.py migrate catalog 0001 && manage.py migrate` to add the indexes.",
            exc,
        )
        return
    for name, expression in INDEXES.items():
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {name} ON catalog_product "
            f"USING gin ({expression} gin_trgm_ops)"
        )


def drop_indexes(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    for name in INDEXES:
        schema_editor.execute(f"DROP INDEX IF EXISTS {name}")


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [migrations.RunPython(create_indexes, drop_indexes)]
