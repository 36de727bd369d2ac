"""Reads: the querysets the API lists from."""

from __future__ import annotations

from django.db.models import QuerySet

from videos.models import Camera, CameraGroup, VideoArchive


def archive_list() -> QuerySet[VideoArchive]:
    return VideoArchive.objects.all()


def camera_group_list() -> QuerySet[CameraGroup]:
    return CameraGroup.objects.all()


def camera_list() -> QuerySet[Camera]:
    return Camera.objects.all()
