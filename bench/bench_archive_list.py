"""Benchmark: CPU cost of `GET /videos/?limit=N`, the list of video archives, on a throwaway SQLite database.

Creates `--rows` archives with the default stream_settings, then times (`perf_counter`, `--repeat` runs after one
warm-up run) two things: serializing the rows with `VideoArchiveSerializer(many=True)` alone, and the whole request
through the API client (authentication, query, pagination, JSON rendering). Prints a table; `--json-out` writes it.

Run from the repository root (seconds; the database lives in a temporary directory)::

    .venv/bin/python bench/bench_archive_list.py --rows 1000 --json-out /tmp/archive_list.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


def _timed(action: Any, repeat: int) -> list[float]:
    action()  # warm-up, not counted
    seconds = []
    for _ in range(repeat):
        start = time.perf_counter()
        action()
        seconds.append(time.perf_counter() - start)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1000, help="archives in the list (the API's page limit is 1000)")
    parser.add_argument("--repeat", type=int, default=5, help="timed runs of each measurement")
    parser.add_argument("--json-out", type=Path, help="write the results here as JSON")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    os.environ["DATABASE_URL"] = f"sqlite:///{tmp.name}/bench.sqlite3"
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "findface_videos.settings")
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from rest_framework.test import APIClient, APIRequestFactory

    from videos.models import CameraGroup, VideoArchive
    from videos.serializers.archives import VideoArchiveSerializer
    from videos.services import archive_create

    call_command("migrate", verbosity=0)
    group = CameraGroup.objects.create(name="bench")
    template = archive_create(data={"camera_group": group, "name": "bench 0"})
    VideoArchive.objects.bulk_create(
        VideoArchive(camera_group=group, name=f"bench {i}", stream_settings=template.stream_settings)
        for i in range(1, args.rows)
    )
    rows = list(VideoArchive.objects.all()[: args.rows])
    request = APIRequestFactory().get("/videos/")

    def serialize() -> None:
        VideoArchiveSerializer(rows, many=True, context={"request": request}).data  # noqa: B018

    admin = User.objects.create_superuser(username="bench", password="bench-pw", email="")
    client = APIClient()
    client.force_authenticate(admin)

    def get_list() -> None:
        response = client.get(f"/videos/?limit={args.rows}")
        assert response.status_code == 200 and len(response.json()["results"]) == args.rows, response.content[:200]

    results: dict[str, Any] = {"rows": args.rows, "repeat": args.repeat, "python": platform.python_version(),
                               "machine": platform.machine(), "measurements": {}}
    print(f"{'measurement':<28}{'p50 s':>10}{'min s':>10}{'ms/row':>10}")
    for name, action in (("serializer(many=True).data", serialize), ("GET /videos/?limit=rows", get_list)):
        seconds = _timed(action, args.repeat)
        p50 = statistics.median(seconds)
        results["measurements"][name] = {"p50_s": p50, "min_s": min(seconds), "ms_per_row": 1000 * p50 / args.rows}
        print(f"{name:<28}{p50:>10.3f}{min(seconds):>10.3f}{1000 * p50 / args.rows:>10.3f}")
    if args.json_out:
        args.json_out.write_text(json.dumps(results, indent=2) + "\n")
    tmp.cleanup()


if __name__ == "__main__":
    main()
