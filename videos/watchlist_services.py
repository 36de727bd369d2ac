"""Writes of watch lists, cards and card photos, and a face cluster's card.

Every change that can change which events match marks those events pending and sends matching on commit
(videos.matching), in the change's transaction.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import numpy as np
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from videos import matching
from videos.clusters import lock_clusters
from videos.detections import photo_faces
from videos.errors import BadParam, Conflict, NotFound
from videos.models import Card, CardPhoto, FaceCluster, WatchList

logger = logging.getLogger(__name__)

MAX_PHOTOS_PER_CARD = 20
# What decides matching; a change of name, color or comment alone sends nothing.
_LIST_MATCH_FIELDS = ("active", "threshold", "camera_groups")
_CARD_MATCH_FIELDS = ("active", "watch_lists")


def _apply(instance: Any, data: dict[str, Any], m2m: tuple[str, ...]) -> bool:
    """Set plain fields, save, then set the many-to-many ones; whether a field that matching reads changed."""
    before = {name: _value(instance, name, m2m) for name in data if instance.pk}
    for name, value in data.items():
        if name not in m2m:
            setattr(instance, name, value)
    instance.save()
    for name in m2m:
        if name in data:
            getattr(instance, name).set(data[name])
    return any(before.get(name) != _value(instance, name, m2m) for name in data)


def _value(instance: Any, name: str, m2m: tuple[str, ...]) -> Any:
    if name in m2m:
        return sorted(getattr(instance, name).values_list("pk", flat=True)) if instance.pk else []
    return getattr(instance, name)


@transaction.atomic
def watch_list_create(*, data: dict[str, Any]) -> WatchList:
    watch_list = WatchList()
    _apply(watch_list, data, ("camera_groups",))
    return watch_list  # no card is in it yet: nothing to match


@transaction.atomic
def watch_list_update(*, watch_list: WatchList, data: dict[str, Any]) -> WatchList:
    watched = {name: value for name, value in data.items() if name in _LIST_MATCH_FIELDS}
    rest = {name: value for name, value in data.items() if name not in _LIST_MATCH_FIELDS}
    _apply(watch_list, rest, ())
    if watched and _apply(watch_list, watched, ("camera_groups",)):
        matching.mark_list_events(watch_list.pk)
        matching.enqueue_matching(list_ids=[watch_list.pk])
    return watch_list


@transaction.atomic
def watch_list_delete(*, watch_list: WatchList) -> None:
    card_ids = list(watch_list.cards.values_list("pk", flat=True))
    marked = matching.mark_list_events(watch_list.pk)
    watch_list.delete()
    if marked or card_ids:
        matching.enqueue_matching(card_ids=card_ids)


@transaction.atomic
def card_create(*, data: dict[str, Any]) -> Card:
    card = Card()
    _apply(card, data, ("watch_lists",))
    return card  # no photo yet: nothing to match


@transaction.atomic
def card_update(*, card: Card, data: dict[str, Any]) -> Card:
    if _apply(card, data, ("watch_lists",)) and any(name in data for name in _CARD_MATCH_FIELDS):
        matching.mark_card_events([card.pk])
        matching.enqueue_matching(card_ids=[card.pk])
    return card


def card_delete(*, card: Card) -> None:
    names = list(card.photos.values_list("image", flat=True))
    with transaction.atomic():
        marked = matching.mark_card_events([card.pk])
        card.delete()
        if marked:
            matching.enqueue_matching()
    _delete_files(names)


def card_photo_add(*, card_id: int, data: bytes) -> CardPhoto:
    """Detect the face of a photo and add it to the card: BadParam when it has no face or more than one."""
    if not Card.objects.filter(pk=card_id).exists():
        raise BadParam(_("Card %(id)s not found.") % {"id": card_id}, param="card")
    info, faces = photo_faces(data)
    if not faces:
        raise BadParam(_("No face was found on the photo; a card photo needs exactly one face."), param="photo")
    if len(faces) > 1:
        raise BadParam(_("%(count)d faces were found on the photo; a card photo needs exactly one face.")
                       % {"count": len(faces)}, param="photo")
    face = faces[0]
    name = default_storage.save(f"cards/{card_id}/{secrets.token_hex(8)}.{'png' if info.format == 'png' else 'jpg'}",
                                ContentFile(data))
    try:
        with transaction.atomic():
            card = Card.objects.select_for_update().filter(pk=card_id).first()
            if card is None:
                raise BadParam(_("Card %(id)s not found.") % {"id": card_id}, param="card")
            if card.photos.count() >= MAX_PHOTOS_PER_CARD:
                raise Conflict(_("A card has at most %(limit)d photos; delete one first.")
                               % {"limit": MAX_PHOTOS_PER_CARD})
            photo = CardPhoto.objects.create(
                card=card, image=name, frame_coords_left=face.box[0], frame_coords_top=face.box[1],
                frame_coords_right=face.box[2], frame_coords_bottom=face.box[3],
                confidence=round(face.confidence, 4), quality=round(face.quality, 4),
                embedding=np.asarray(face.embedding, dtype="<f4").tobytes(),
            )
            Card.objects.filter(pk=card_id).update(modified_date=photo.created_date)
            matching.enqueue_matching(card_ids=[card_id])
    except BaseException:
        _delete_files([name])
        raise
    return photo


def card_photo_delete(*, photo: CardPhoto) -> None:
    name = photo.image.name
    with transaction.atomic():
        matching.mark_card_events([photo.card_id])
        photo.delete()
        matching.enqueue_matching(card_ids=[photo.card_id])
    _delete_files([name])


def face_cluster_set_card(*, cluster: FaceCluster, card: Card | None) -> FaceCluster:
    """Attach the cluster to a card (None: detach). It becomes curated, a person's (videos.persons), so that
    re-processing its archives keeps it and its card; under the clusters lock, as persons' changes are."""
    with transaction.atomic():
        lock_clusters()
        updated = FaceCluster.objects.filter(pk=cluster.pk).update(card=card, curated=True,
                                                                   modified_date=timezone.now())
        if not updated:  # merged into another meanwhile
            raise NotFound(_("No such cluster."))
        return FaceCluster.objects.defer("centroid").get(pk=cluster.pk)


def _delete_files(names: list[str]) -> None:
    for name in names:
        if not name:
            continue
        try:
            default_storage.delete(name)
        except OSError:
            logger.warning("could not delete %s", name)
