"""User models: owned by each environment, never synced (the reference schema's userapp app)."""
from django.contrib.contenttypes.fields import GenericForeignKey, GenericRelation
from django.contrib.contenttypes.models import ContentType
from django.db import models

from catalog.models import Artist, Gene, Marker, Outcome, Unit


class TaggedItem(models.Model):
    content_type = models.ForeignKey(ContentType, on_delete=models.CASCADE)
    object_id = models.PositiveIntegerField()
    content_object = GenericForeignKey("content_type", "object_id")
    label = models.CharField(max_length=20)


class Report(models.Model):
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE)
    marker = models.ForeignKey(Marker, on_delete=models.PROTECT, null=True)
    outcome = models.ForeignKey(Outcome, on_delete=models.SET_NULL, null=True)
    tags = GenericRelation(TaggedItem)
    title = models.CharField(max_length=50)


class ReportLine(models.Model):
    report = models.ForeignKey(Report, on_delete=models.CASCADE)
    gene = models.ForeignKey(Gene, on_delete=models.SET_NULL, null=True, to_field="symbol")
    text = models.CharField(max_length=50)


class Comment(models.Model):
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE, null=True)
    parent = models.ForeignKey("self", on_delete=models.CASCADE, null=True)
    body = models.CharField(max_length=50)


class Album(models.Model):
    artist = models.ForeignKey(Artist, on_delete=models.CASCADE)
    name = models.CharField(max_length=50)


class Song(models.Model):
    artist = models.ForeignKey(Artist, on_delete=models.CASCADE)
    album = models.ForeignKey(Album, on_delete=models.RESTRICT)
    name = models.CharField(max_length=50)


class Document(models.Model):  # multi-table inheritance parent
    unit = models.ForeignKey(Unit, on_delete=models.CASCADE)
    title = models.CharField(max_length=50)


class SignedDocument(Document):  # multi-table inheritance child
    signer = models.CharField(max_length=50)


class Preference(models.Model):
    unit = models.ForeignKey(Unit, on_delete=models.SET_DEFAULT, default=1)
    outcome = models.ForeignKey(Outcome, on_delete=models.DO_NOTHING, null=True, db_constraint=False)
    value = models.CharField(max_length=50)
