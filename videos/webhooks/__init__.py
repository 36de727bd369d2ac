"""Webhooks: signed POSTs of archive status changes, matched events and new clusters (README "Webhooks").

`emit` writes the outbox rows in the transaction of the change; `delivery` sends them; `services` and `selectors`
serve the API.
"""

from videos.webhooks.emit import (
    MatchedEvent,
    notify_archive_status,
    notify_matched_events,
    notify_new_clusters,
)

__all__ = ["MatchedEvent", "notify_archive_status", "notify_matched_events", "notify_new_clusters"]
