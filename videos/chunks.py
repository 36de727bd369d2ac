"""A long archive's chunks read as one job: their statistic summed, their tracks stitched into one set of events.

The chunk lifecycle itself (fan-out, claim, report, finish, sweep) is in videos.jobs with the rest of the job's
lifecycle; this module holds what that needs of the chunks' results:

- `aggregate_statistic`: the archive's statistic from its chunks' (written at every chunk report, so
  `health_status` follows all of them live). Frames are summed (frames of the shared stretches count in both
  chunks: they were analysed twice); `processed_duration` counts each chunk's own part once.
- `stitch_events`: once the last chunk has ended, tracks that cross a cut (processing.chunks.stitch) become one
  track, the first chunk's, and keep one event per posting policy: `best` the best of the whole chain,
  `first` the first chunk's, `last` the last chunk's, `realtime` the earlier chunk's posts and the later
  chunk's from where the earlier one stopped analysing.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.core.files.storage import default_storage
from django.db import transaction

from processing.chunks import chunk_of_track, stitch
from videos.health import KIND_PLURALS, OBJECT_KINDS, empty_statistic
from videos.models import EVENT_MODELS, RUNNING_STATES, ArchiveChunk, JobState

logger = logging.getLogger(__name__)

SUMMED = ("frames_processed", "frames_dropped", "frames_imotion_skipped", "decoding_soft_errors")


def _owned_seconds(chunk: ArchiveChunk, source_len: float | None) -> float:
    """Seconds of the chunk's own part [start, end) processed so far."""
    end = chunk.end if chunk.end is not None else (source_len or 0.0)
    if chunk.state == JobState.COMPLETED:
        return max(0.0, end - chunk.start)
    done = float((chunk.statistic or {}).get("processed_duration") or 0.0)
    return max(0.0, min(done, end) - chunk.start)


def aggregate_statistic(chunks: list[ArchiveChunk], source_len: float | None) -> dict[str, Any]:
    statistic = empty_statistic()
    objects = {kind: {"posted": 0, "failed": 0, "not_posted": 0} for kind in OBJECT_KINDS}
    running = [chunk for chunk in chunks if chunk.state in RUNNING_STATES]
    for chunk in chunks:
        own = chunk.statistic or {}
        for key in SUMMED:
            statistic[key] += int(own.get(key) or 0)
        for kind, counters in (own.get("objects") or {}).items():
            for name in objects.get(kind, {}):
                objects[kind][name] += int((counters or {}).get(name) or 0)
        statistic["frame_width"] = max(statistic["frame_width"], int(own.get("frame_width") or 0))
        statistic["frame_height"] = max(statistic["frame_height"], int(own.get("frame_height") or 0))
        statistic["last_stream_timestamp"] = max(statistic["last_stream_timestamp"],
                                                 float(own.get("last_stream_timestamp") or 0))
    for kind, counters in objects.items():
        for name, count in counters.items():
            statistic[f"{KIND_PLURALS[kind]}_{name}"] = count
    statistic["objects"] = objects
    statistic["processed_duration"] = round(sum(_owned_seconds(chunk, source_len) for chunk in chunks), 3)
    # The fleet's rate while chunks run (each chunk's own fps, summed); afterwards the chunks' mean.
    rates = [float((chunk.statistic or {}).get("processing_fps") or 0) for chunk in (running or chunks)]
    statistic["processing_fps"] = round(sum(rates) if running else (sum(rates) / len(rates) if rates else 0), 2)
    # Time left: the slowest running chunk's, once no chunk waits in line (a queued one has no estimate).
    etas = [(chunk.statistic or {}).get("eta_seconds") for chunk in running]
    if running and not any(chunk.state == JobState.QUEUED for chunk in chunks) and None not in etas:
        statistic["eta_seconds"] = max(float(eta) for eta in etas)
    if source_len:
        statistic["progress"] = round(min(1.0, statistic["processed_duration"] / source_len), 4)
    return statistic


def stitch_events(*, archive_id: int, chunks: list[ArchiveChunk], overlap: float) -> int:
    """Merge the events of tracks that cross a cut (see the module's docstring); returns the events removed.

    Runs in the transaction that ends the job (the archive's row locked), before clustering is sent.
    """
    recorded = {chunk.index: chunk.overlap or {} for chunk in chunks}
    by_index = {chunk.index: chunk for chunk in chunks}
    embeddings = _track_embeddings(archive_id, recorded)

    def similarity(kind: str, a: int, b: int) -> float | None:
        first, second = embeddings.get((kind, a)), embeddings.get((kind, b))
        if first is None or second is None or first.shape != second.shape:
            return None
        return float(np.dot(first, second))

    heads = stitch(recorded, similarity)
    chains: dict[tuple[str, int], list[int]] = {}
    for (kind, track_id), head in heads.items():
        chains.setdefault((kind, head), [head]).append(track_id)
    removed: list[str] = []
    count = 0
    for (kind, head), members in chains.items():
        model = EVENT_MODELS[kind]
        events = list(model.objects.filter(video_archive_id=archive_id, track_id__in=members))
        keep: list[Any] = []
        by_policy: dict[str, list[Any]] = {}
        for event in events:
            by_policy.setdefault(event.post_policy, []).append(event)
        for policy, group in by_policy.items():
            if policy == "best":
                keep.append(max(group, key=lambda e: (e.quality, -e.frame_index)))
            elif policy == "first":
                keep.append(min(group, key=lambda e: e.frame_index))
            elif policy == "last":
                keep.append(max(group, key=lambda e: e.frame_index))
            else:  # realtime: each chunk's posts from where the chunk before it stopped analysing
                for event in group:
                    chunk = by_index.get(chunk_of_track(event.track_id))
                    previous = by_index.get(chunk.index - 1) if chunk is not None else None
                    if event.track_id == head or previous is None or previous.end is None:
                        keep.append(event)
                        continue
                    covered_until = previous.end + overlap
                    if event.frame_timestamp >= covered_until:
                        keep.append(event)
        kept_ids = {event.pk for event in keep}
        first_seen = min((float((e.detector_params or {}).get("track_start_timestamp", e.frame_timestamp))
                          for e in events), default=0.0)
        for event in events:
            if event.pk in kept_ids:
                continue
            removed.extend(name for name in (event.thumbnail.name, event.fullframe.name,
                                             event.normalized.name if event.normalized else "") if name)
            event.delete()
            count += 1
        for event in keep:
            params = {**(event.detector_params or {}), "track_id": head, "track_start_timestamp": first_seen}
            model.objects.filter(pk=event.pk).update(track_id=head, detector_params=params)

    def delete_files() -> None:
        for name in removed:
            try:
                default_storage.delete(name)
            except OSError:
                logger.warning("video archive %s: could not delete %s", archive_id, name)

    transaction.on_commit(delete_files)
    if count:
        logger.info("video archive %s: %d tracks crossed a chunk boundary; %d duplicate events merged",
                    archive_id, len(heads), count)
    return count


def _track_embeddings(archive_id: int, recorded: dict[int, dict[str, Any]]) -> dict[tuple[str, int], np.ndarray]:
    """An embedding per track seen in a shared stretch (its best event's, else any), for appearance."""
    wanted: dict[str, set[int]] = {}
    for by_kind in recorded.values():
        for kind, tracks in by_kind.items():
            wanted.setdefault(kind, set()).update(int(track_id) for track_id in tracks)
    found: dict[tuple[str, int], np.ndarray] = {}
    for kind, track_ids in wanted.items():
        model = EVENT_MODELS.get(kind)
        if model is None or not track_ids:
            continue
        rows = model.objects.filter(video_archive_id=archive_id, track_id__in=track_ids,
                                    embedding__isnull=False).values_list("track_id", "post_policy", "embedding")
        for track_id, _policy, data in sorted(rows, key=lambda row: row[1] != "best"):
            if (kind, track_id) in found or not data:
                continue
            vector = np.frombuffer(bytes(data), dtype="<f4")
            norm = float(np.linalg.norm(vector))
            if norm > 0:
                found[(kind, track_id)] = vector / norm
    return found
