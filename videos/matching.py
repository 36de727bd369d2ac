"""Watch list matching: which card (if any) each face event is, through which lists, with what similarity.

An event matches a card when the card is active, is in at least one active list that applies to the event's camera
group (a list with no camera groups applies to all), and one of its photos is at least that list's `threshold`
similar to the event's face (cosine of the FaceNet embeddings clipped at 0, as face search measures it). The event
gets the most similar such card (`matched_card`, `match_confidence`) and every list of that card that applies and
whose threshold the similarity reaches (`matched_lists`).

The event table says which events need (re)computing: `match_pending`. Events are stored pending; a change of a
card, its photos or a list marks the events it matched pending (in the change's transaction), and the task it
sends on commit (`videos.match_faces`) also marks the events that the face search index finds near the changed
cards' photos, then matches every pending event against the cards as they are then. The end of a job (after its
clustering) and the sweeper send the same task, so nothing pending stays so for long. `faces_match_pending` is the
one place that writes matches and returns the ids of the events newly matched (a card they did not have before):
what a notifier of matches takes.

Locking: matching runs chunk by chunk, each chunk in a transaction that first takes the matching lock (a
PostgreSQL advisory lock; on SQLite a no-op UPDATE, which takes the one write lock), claims its events by clearing
their flag, and reads the cards then; a change that commits later marks its events pending again, so the last
word is always computed from the latest cards.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from django.db import connection, transaction
from kombu.exceptions import KombuError, OperationalError

from videos.broker import send_matching
from videos.models import Card, CardPhoto, FaceEvent, WatchList
from videos.webhooks import MatchedEvent, notify_matched_events

logger = logging.getLogger(__name__)

MATCH_LOCK_KEY = int.from_bytes(b"ffvmatch", "big") - 2**63
CHUNK = 500
# Index hits asked for per card photo at first; four times more each round while the index has more.
SEARCH_START = 1000


@dataclass(frozen=True)
class ListRule:
    threshold: float
    camera_groups: frozenset[int] | None  # None: every camera group

    def applies(self, camera_group_id: int) -> bool:
        return self.camera_groups is None or camera_group_id in self.camera_groups


@dataclass
class CardSet:
    """The active cards of active lists, their photos' unit embeddings grouped by card."""

    vectors: np.ndarray  # (photos, dim) float32, grouped by card in `cards` order
    starts: np.ndarray  # index of each card's first photo in `vectors`
    cards: list[int]
    card_lists: dict[int, list[int]] = field(default_factory=dict)
    rules: dict[int, ListRule] = field(default_factory=dict)

    @property
    def min_threshold(self) -> float:
        return min((rule.threshold for rule in self.rules.values()), default=1.0)


@dataclass(frozen=True)
class Match:
    card_id: int
    confidence: float
    list_ids: tuple[int, ...]


def unit(raw: bytes | memoryview | None) -> np.ndarray | None:
    if raw is None:
        return None
    vector = np.frombuffer(bytes(raw), dtype="<f4").astype(np.float32)
    norm = float(np.linalg.norm(vector)) if vector.size else 0.0
    if not np.isfinite(norm) or norm < 1e-6:
        return None
    return vector / norm


def load_cards(card_ids: Iterable[int] | None = None) -> CardSet:
    """The cards that can match now (optionally only some of them), with their photos and rules."""
    rules: dict[int, ListRule] = {}
    groups: dict[int, set[int]] = defaultdict(set)
    for list_id, group_id in WatchList.camera_groups.through.objects.filter(watchlist__active=True).values_list(
            "watchlist_id", "cameragroup_id"):
        groups[list_id].add(group_id)
    for list_id, threshold in WatchList.objects.filter(active=True).values_list("id", "threshold"):
        rules[list_id] = ListRule(float(threshold), frozenset(groups[list_id]) if groups[list_id] else None)
    memberships = Card.watch_lists.through.objects.filter(card__active=True, watchlist_id__in=list(rules))
    if card_ids is not None:
        memberships = memberships.filter(card_id__in=list(card_ids))
    card_lists: dict[int, list[int]] = defaultdict(list)
    for card_id, list_id in memberships.values_list("card_id", "watchlist_id"):
        card_lists[card_id].append(list_id)
    by_card: dict[int, list[np.ndarray]] = defaultdict(list)
    photos = CardPhoto.objects.filter(card_id__in=list(card_lists)).order_by("card_id", "id")
    dim = None
    for card_id, raw in photos.values_list("card_id", "embedding"):
        vector = unit(raw)
        if vector is None or (dim is not None and vector.size != dim):
            continue
        dim = vector.size
        by_card[card_id].append(vector)
    cards = sorted(by_card)
    vectors = [vector for card_id in cards for vector in by_card[card_id]]
    starts = np.cumsum([0] + [len(by_card[card_id]) for card_id in cards[:-1]]).astype(np.int64)
    return CardSet(
        vectors=np.vstack(vectors) if vectors else np.zeros((0, 0), np.float32),
        starts=starts if cards else np.zeros(0, np.int64),
        cards=cards,
        card_lists={card_id: sorted(card_lists[card_id]) for card_id in cards},
        rules=rules,
    )


def best_matches(cards: CardSet, embeddings: list[np.ndarray | None], camera_groups: list[int]) -> list[Match | None]:
    """The match of each event (its unit embedding and camera group), None where it matches no card."""
    result: list[Match | None] = [None] * len(embeddings)
    usable = [row for row, vector in enumerate(embeddings)
              if vector is not None and cards.cards and vector.size == cards.vectors.shape[1]]
    if not usable:
        return result
    events = np.vstack([embeddings[row] for row in usable])
    similarity = np.clip(events @ cards.vectors.T, 0.0, 1.0)
    per_card = np.maximum.reduceat(similarity, cards.starts, axis=1)  # (events, cards): best photo of each card
    floor = cards.min_threshold
    for position, row in enumerate(usable):
        best: Match | None = None
        for column in np.flatnonzero(per_card[position] >= floor):
            score = float(per_card[position, column])
            card_id = cards.cards[column]
            lists = tuple(list_id for list_id in cards.card_lists[card_id]
                          if cards.rules[list_id].applies(camera_groups[row])
                          and score >= cards.rules[list_id].threshold)
            if lists and (best is None or score > best.confidence):
                best = Match(card_id, round(score, 4), lists)
        result[row] = best
    return result


def _lock() -> None:
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [MATCH_LOCK_KEY])
        else:
            cursor.execute(f"UPDATE {WatchList._meta.db_table} SET active = active WHERE 1 = 0")


def faces_match_pending(*, limit: int | None = None) -> list[int]:
    """Match every pending face event against the cards as they are now; the ids of the events newly matched
    (matched to a card they were not matched to before), in id order. Idempotent."""
    newly: list[int] = []
    done = 0
    while limit is None or done < limit:
        with transaction.atomic():
            _lock()
            ids = list(FaceEvent.objects.filter(match_pending=True).order_by("id").values_list("id", flat=True)
                       [:CHUNK])
            if not ids:
                break
            FaceEvent.objects.filter(pk__in=ids).update(match_pending=False)
            newly.extend(_match_events(ids, load_cards()))
        done += len(ids)
    return newly


def _match_events(ids: list[int], cards: CardSet) -> list[int]:
    rows = list(FaceEvent.objects.filter(pk__in=ids).order_by("id").values_list(
        "id", "camera_group_id", "embedding", "matched_card_id", "match_confidence", "matched_list_ids"))
    through = FaceEvent.matched_lists.through
    old_lists: dict[int, set[int]] = defaultdict(set)
    for event_id, list_id in through.objects.filter(faceevent_id__in=ids).values_list("faceevent_id", "watchlist_id"):
        old_lists[event_id].add(list_id)
    matches = best_matches(cards, [unit(row[2]) for row in rows], [row[1] for row in rows])
    changed: list[FaceEvent] = []
    relink: list[int] = []
    links = []
    newly: list[int] = []
    found: list[tuple[int, int, list[int], float | None]] = []
    for (event_id, _group, _raw, old_card, old_confidence, shown), match in zip(rows, matches, strict=True):
        card = match.card_id if match else None
        confidence = match.confidence if match else None
        lists = set(match.list_ids) if match else set()
        if card != old_card or confidence != old_confidence or shown != sorted(lists):
            changed.append(FaceEvent(pk=event_id, matched_card_id=card, match_confidence=confidence,
                                     matched_list_ids=sorted(lists)))
        if lists != old_lists[event_id]:
            relink.append(event_id)
            links.extend(through(faceevent_id=event_id, watchlist_id=list_id) for list_id in sorted(lists))
        if card is not None and card != old_card:
            newly.append(event_id)
            found.append((event_id, card, sorted(lists), confidence))
    if changed:
        FaceEvent.objects.bulk_update(changed, ["matched_card", "match_confidence", "matched_list_ids"])
    if relink:
        through.objects.filter(faceevent_id__in=relink).delete()
        through.objects.bulk_create(links)
    if found:  # webhooks' outbox rows, in this transaction: committed with the matches or not at all
        events = FaceEvent.objects.in_bulk([event_id for event_id, *_rest in found])
        notify_matched_events([MatchedEvent(events[event_id], card, lists, float(confidence or 0.0))
                               for event_id, card, lists, confidence in found if event_id in events])
    return newly


# --- what a change of cards or lists marks


def mark_card_events(card_ids: Iterable[int]) -> int:
    """Mark the events matched to these cards pending (call in the change's transaction)."""
    return FaceEvent.objects.filter(matched_card_id__in=list(card_ids), match_pending=False).update(
        match_pending=True)


def mark_list_events(list_id: int) -> int:
    """Mark the events matched through this list, or to one of its cards, pending."""
    through = FaceEvent.matched_lists.through
    events = through.objects.filter(watchlist_id=list_id).values("faceevent_id")
    marked = FaceEvent.objects.filter(pk__in=events, match_pending=False).update(match_pending=True)
    return marked + mark_card_events(Card.watch_lists.through.objects.filter(watchlist_id=list_id)
                                     .values_list("card_id", flat=True))


def mark_near_cards(card_ids: Iterable[int]) -> int:
    """Mark pending the face events the search index finds at least as similar to these cards' photos as the
    lowest threshold of their active lists: the events a change of them may have made match."""
    from videos.search import search_faces  # the index loads with the first search

    cards = load_cards(card_ids)
    if not cards.cards:
        return 0
    floor = cards.min_threshold
    marked = 0
    for vector in cards.vectors:
        wanted = SEARCH_START
        while True:
            hits = search_faces(vector, threshold=floor, limit=wanted)
            ids = [event_id for event_id, _similarity in hits]
            for start in range(0, len(ids), CHUNK):
                marked += FaceEvent.objects.filter(pk__in=ids[start:start + CHUNK], match_pending=False).update(
                    match_pending=True)
            if len(hits) < wanted:
                break
            wanted *= 4
    return marked


def match_faces(*, card_ids: Iterable[int] = (), list_ids: Iterable[int] = ()) -> list[int]:
    """The task's work: mark what the changed cards (and the cards of the changed lists) are near, then match
    every pending event. Returns the ids of the events newly matched."""
    cards = set(card_ids) | set(Card.watch_lists.through.objects.filter(watchlist_id__in=list(list_ids))
                                .values_list("card_id", flat=True))
    if cards:
        mark_near_cards(sorted(cards))
    newly = faces_match_pending()
    if newly:
        logger.info("watch lists: %d face events newly matched", len(newly))
    return newly


def enqueue_matching(*, card_ids: Iterable[int] = (), list_ids: Iterable[int] = ()) -> None:
    """Send the matching task once the current transaction commits; a broker that is down is logged (the
    sweeper sends it again while events are pending)."""
    cards, lists = sorted(set(card_ids)), sorted(set(list_ids))

    def send() -> None:
        try:
            send_matching(card_ids=cards, list_ids=lists)
        except (KombuError, OperationalError, OSError):
            logger.exception("cannot send watch list matching (cards %s, lists %s)", cards, lists)

    transaction.on_commit(send)


def matching_sweep() -> bool:
    """Send matching when events are pending (new events of running jobs, a lost message)."""
    if FaceEvent.objects.filter(match_pending=True).exists():
        enqueue_matching()
        return True
    return False
