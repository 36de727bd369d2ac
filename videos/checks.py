"""System checks that catch a broken deployment at start-up, with stable ids."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.checks import Error, Tags, Warning, register


@register(Tags.compatibility)
def check_celery_time_limits(app_configs, **kwargs) -> list[Error]:
    """soft time limit < hard time limit < broker visibility timeout, or Redis redelivers running jobs."""
    errors = []
    soft, hard = settings.CELERY_TASK_SOFT_TIME_LIMIT, settings.CELERY_TASK_TIME_LIMIT
    visibility = settings.CELERY_BROKER_TRANSPORT_OPTIONS.get("visibility_timeout")
    if not soft < hard:
        errors.append(Error("CELERY_TASK_SOFT_TIME_LIMIT must be below CELERY_TASK_TIME_LIMIT", id="videos.E001"))
    if visibility is not None and not hard < visibility:
        errors.append(
            Error("the broker visibility_timeout must exceed CELERY_TASK_TIME_LIMIT", id="videos.E002")
        )
    if not settings.CELERY_TASK_ACKS_LATE or settings.CELERY_WORKER_PREFETCH_MULTIPLIER != 1:
        errors.append(Error("long jobs need acks_late and prefetch multiplier 1", id="videos.E003"))
    return errors


@register(Tags.files)
def check_media_writable(app_configs, **kwargs) -> list[Error]:
    root = settings.MEDIA_ROOT
    if os.path.isdir(root) and not os.access(root, os.W_OK):
        return [Error(f"MEDIA_ROOT {root} is not writable", id="videos.E010")]
    return []


@register(Tags.security)
def check_login_throttle(app_configs, **kwargs) -> list[Warning]:
    """A per-user limit not above the per-address one lets a single client address lock any user out."""
    per_user, per_address = settings.FFV_LOGIN_FAILURES_PER_USER, settings.FFV_LOGIN_FAILURES_PER_ADDRESS
    if per_user <= per_address:
        return [Warning(f"FFV_LOGIN_FAILURES_PER_USER ({per_user}) is not above FFV_LOGIN_FAILURES_PER_ADDRESS "
                        f"({per_address}): a single client address can lock any user out", id="videos.W020")]
    return []
