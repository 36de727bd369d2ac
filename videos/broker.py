"""Sending job and control messages, and asking the broker whether a job's message is still there.

Messages are sent by task name (`send_task`), so services, jobs and clusters never import `videos.tasks` (which
imports them): no import cycle. Processing jobs go to FFV_PROCESSING_QUEUE (the fleet's busy queue); the sweeper
and clustering go to FFV_CONTROL_QUEUE, so they never wait behind hours of video.
"""

from __future__ import annotations

import logging

from celery import current_app
from django.conf import settings

logger = logging.getLogger(__name__)

PROCESS_TASK = "videos.process_archive"
CHUNK_TASK = "videos.process_chunk"
CLUSTER_TASK = "videos.cluster_archive"
SWEEP_TASK = "videos.sweep_jobs"
WEBHOOK_DELIVERY_TASK = "videos.deliver_webhook"
EXPORT_TASK = "videos.build_export"


MATCH_TASK = "videos.match_faces"
# A failed send is tried again at once, briefly: a broker that is down answers the client with 503 instead.
SEND_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.5, "interval_max": 1}


def send_processing(archive_id: int, task_id: str) -> None:
    """Send a job's message (its id is the job's task id); raises kombu/OSError when the broker cannot take it."""
    current_app.send_task(PROCESS_TASK, args=[archive_id], task_id=task_id, queue=settings.FFV_PROCESSING_QUEUE,
                          retry=True, retry_policy=SEND_RETRY)


def send_chunk(chunk_id: int, task_id: str) -> None:
    """Send one chunk of a long archive's job (videos.chunks); raises like send_processing."""
    current_app.send_task(CHUNK_TASK, args=[chunk_id], task_id=task_id, queue=settings.FFV_PROCESSING_QUEUE,
                          retry=True, retry_policy=SEND_RETRY)


def send_clustering(archive_id: int) -> None:
    current_app.send_task(CLUSTER_TASK, args=[archive_id], queue=settings.FFV_CONTROL_QUEUE, retry=True,
                          retry_policy=SEND_RETRY)


def send_webhook_delivery(delivery_id: int, countdown: float | None = None) -> None:
    """Send one webhook delivery (control queue), now or after `countdown` seconds (a retry's backoff)."""
    current_app.send_task(WEBHOOK_DELIVERY_TASK, args=[delivery_id], queue=settings.FFV_CONTROL_QUEUE,
                          countdown=countdown, retry=True, retry_policy=SEND_RETRY)


def send_export(export_id: int, task_id: str) -> None:
    """Build an export (videos.exports) on the control queue; raises like send_processing."""
    current_app.send_task(EXPORT_TASK, args=[export_id], task_id=task_id, queue=settings.FFV_CONTROL_QUEUE,
                          retry=True, retry_policy=SEND_RETRY)


def send_matching(*, card_ids: list[int], list_ids: list[int]) -> None:
    """Watch list matching of pending face events (videos.matching), after a change of these cards or lists."""
    current_app.send_task(MATCH_TASK, kwargs={"card_ids": card_ids, "list_ids": list_ids},
                          queue=settings.FFV_CONTROL_QUEUE, retry=True, retry_policy=SEND_RETRY)


def broker_holds(task_id: str, queue: str) -> bool | None:
    """Whether the broker still has the job's message: waiting in `queue`, or delivered to a worker and not yet
    acknowledged. None when this broker cannot be asked (then nothing is assumed lost).

    Redis only: its queues are lists (one per priority step) of JSON messages that carry the task id, and
    delivered-but-unacknowledged messages sit in one hash until acked. A queue is read whole, which costs
    a fraction of a second for tens of thousands of waiting jobs; the sweeper asks only about jobs that have
    waited longer than FFV_QUEUE_STALE_SECONDS.
    """
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    needle = task_id.encode()
    with current_app.connection_for_read() as connection:
        channel = connection.default_channel
        client = channel.client
        keys = {channel._q_for_pri(queue, step) for step in channel.priority_steps}
        for key in sorted(keys):
            for start in range(0, int(client.llen(key)), 1000):
                if any(needle in item for item in client.lrange(key, start, start + 999)):
                    return True
        for _tag, item in client.hscan_iter(channel.unacked_key, count=1000):
            if needle in item:
                return True
    return False


def queue_depths(queues: list[str]) -> dict[str, int] | None:
    """Messages waiting in each queue (Redis LLEN of its lists, one per priority step; delivered but unacked ones
    not included). None when the broker is not Redis; raises when Redis cannot be reached."""
    if not settings.CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
        return None
    depths: dict[str, int] = {}
    with current_app.connection_for_read(settings.CELERY_BROKER_URL) as connection:
        channel = connection.default_channel
        client = channel.client
        for queue in queues:
            keys = {channel._q_for_pri(queue, step) for step in channel.priority_steps}
            depths[queue] = sum(int(client.llen(key)) for key in sorted(keys))
    return depths
