"""Reads of watch lists, cards and card photos."""

from __future__ import annotations

import mimetypes

from django.core.files.storage import default_storage
from django.db.models import Prefetch, QuerySet
from django.utils.translation import gettext as _

from videos.errors import NotFound
from videos.event_selectors import Picture
from videos.models import CameraGroup, Card, CardPhoto, WatchList


def watch_list_list() -> QuerySet[WatchList]:
    return WatchList.objects.prefetch_related(Prefetch("camera_groups", queryset=CameraGroup.objects.only("id")))


def card_list() -> QuerySet[Card]:
    return Card.objects.prefetch_related(
        Prefetch("watch_lists", queryset=WatchList.objects.only("id")),
        Prefetch("photos", queryset=CardPhoto.objects.only("id", "card_id")),
    )


def card_photo_list() -> QuerySet[CardPhoto]:
    return CardPhoto.objects.defer("embedding")


def card_photos(*, card: Card) -> QuerySet[CardPhoto]:
    return card_photo_list().filter(card=card).order_by("-id")


def card_photo_picture(*, photo: CardPhoto) -> Picture:
    name = photo.image.name
    try:
        handle = default_storage.open(name, "rb")
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError, ValueError):
        raise NotFound(_("The picture file is missing.")) from None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    return Picture(file=handle, content_type=content_type, name=name.rsplit("/", 1)[-1])
