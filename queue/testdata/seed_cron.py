"""The seed's cron, the baseline of BenchmarkApplyDeleteEntries -queue.django.

django-logical-replication's cron applies its delete queue one row at a
time: each row in its own transaction, its model's row deleted by Django's
own .delete(), whose Collector reads the referencing rows relation by
relation and applies the models' on_delete rules. This script does that to
the entries of pgoutpost.delete_queue, oldest first, with the reference
schema's real models (contrib/django/tests) and Django's PostgreSQL backend:
per entry, dequeue it, then QuerySet.delete() on its row.

    python3 seed_cron.py HOST PORT USER DBNAME

prints "ENTRIES SECONDS": the entries applied and the time they took, the
first read of the queue included.
"""
import json
import sys
import time
from pathlib import Path

root = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(root / "contrib" / "django"), str(root / "contrib" / "django" / "tests")]

import django  # noqa: E402
from django.conf import settings  # noqa: E402

host, port, user, name = sys.argv[1:5]
settings.configure(
    INSTALLED_APPS=["django.contrib.contenttypes", "django.contrib.auth", "pgoutpost_django", "catalog", "userapp"],
    DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "HOST": host, "PORT": port, "USER": user, "NAME": name}},
    USE_TZ=True,
    DEFAULT_AUTO_FIELD="django.db.models.AutoField",
    PGOUTPOST_ROLE="slave",
)
django.setup()

from django.apps import apps  # noqa: E402
from django.db import connection, transaction  # noqa: E402

models = {m._meta.db_table: m for m in apps.get_models()}

start = time.monotonic()
with connection.cursor() as cur:
    cur.execute("SELECT id::text FROM pgoutpost.delete_queue ORDER BY id")
    ids = [r[0] for r in cur.fetchall()]
done = 0
for entry in ids:
    with transaction.atomic(), connection.cursor() as cur:
        cur.execute("DELETE FROM pgoutpost.delete_queue WHERE id = %s RETURNING table_name, pk::text", [entry])
        row = cur.fetchone()
        if row is None:
            continue
        model = models[row[0].partition(".")[2]]
        pk = json.loads(row[1])
        model.objects.filter(pk=pk[model._meta.pk.column]).delete()
        done += 1
print(done, time.monotonic() - start)
