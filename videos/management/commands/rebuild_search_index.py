"""Build the face search index anew from the event table and write it under FFV_SEARCH_INDEX_DIR."""

from __future__ import annotations

import time

from django.conf import settings
from django.core.management.base import BaseCommand

from videos.search import rebuild_search_index


class Command(BaseCommand):
    help = (
        "Rebuild the face search index from the face events' embeddings and write it to FFV_SEARCH_INDEX_DIR. "
        "Processes started afterwards read it; running ones keep their own index in step with the table anyway."
    )

    def handle(self, *args, **options) -> None:
        started = time.monotonic()
        count = rebuild_search_index()
        self.stdout.write(f"face search index: {count} faces written to {settings.FFV_SEARCH_INDEX_DIR} "
                          f"in {time.monotonic() - started:.1f} s")
