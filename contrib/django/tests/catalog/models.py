"""System models: synced from the master environment (the reference schema's catalog app)."""
from django.db import models
from logical_replication.utils import delete_model as seed_delete_model
from logical_replication.utils import denormalize_model as seed_denormalize_model

import pgoutpost_django


@pgoutpost_django.system_model(row_filter="id > 0", columns=["id", "name"])
class Category(models.Model):  # plain system model
    name = models.CharField(max_length=50, unique=True)


@pgoutpost_django.delete_model(on_truncate="log")
class Unit(models.Model):  # delete model
    name = models.CharField(max_length=50)
    category = models.ForeignKey(Category, on_delete=models.PROTECT, null=True)


@seed_delete_model
class Marker(models.Model):  # delete model, system -> system CASCADE
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE)
    name = models.CharField(max_length=50)


@seed_denormalize_model
class Outcome(models.Model):  # denormalize model with an auto-created m2m table
    name = models.CharField(max_length=50)
    sub_outcomes = models.ManyToManyField("self", symmetrical=False, blank=True)


class Gene(models.Model):  # delete model (settings.ADDITIONAL_DELETE_MODELS), referenced through to_field
    symbol = models.CharField(max_length=20, unique=True)


class Artist(models.Model):  # delete model (settings.PGOUTPOST_MODELS)
    name = models.CharField(max_length=50)
