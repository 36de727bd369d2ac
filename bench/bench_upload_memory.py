"""How much memory a streamed upload to object storage adds to the web process, by file size.

Starts a real S3-compatible server (moto's standalone server, `pip install -e '.[dev]'`) and the API as `./dev
serve` starts it (gunicorn with findface_videos/gunicorn_conf.py, one worker process) with FFV_STORAGE=s3, then
uploads bodies of each size as `PUT /videos/{id}/upload/source_file/` (raw body, 1 MiB writes). The body is a
small MPEG-TS clip repeated up to the size, a valid video the API accepts. For each size it reports the web
worker's resident memory before the upload and its peak during it (VmHWM, reset before each upload through
/proc/PID/clear_refs), and the difference: the memory the upload added. The sizes are in MB (10^6 bytes).

    .venv/bin/python bench/bench_upload_memory.py --sizes 200,1000,2000

moto assembles a multipart object in its own memory (about twice the object's size at completion): that is the
S3 server's memory, not the web process's, but a 2 GB run needs some 5 GB free on this machine.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MB = 1000 * 1000
CHUNK = 1024 * 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_listening(port: int, process: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"process exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"nothing listens on {port}")


def ts_clip() -> bytes:
    """A short MPEG-TS clip: concatenated copies of it are still a stream FFmpeg reads."""
    import av
    import numpy as np

    out = io.BytesIO()
    with av.open(out, "w", format="mpegts") as container:
        stream = container.add_stream("mpeg2video", rate=25)
        stream.width, stream.height, stream.pix_fmt, stream.bit_rate = 640, 360, "yuv420p", 4_000_000
        rng = np.random.default_rng(1)
        for _ in range(50):
            image = rng.integers(0, 256, (360, 640, 3), dtype=np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out.getvalue()


def status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def web_worker_pid(master: int) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
        if children:
            return int(children[0])
        time.sleep(0.2)
    raise SystemExit("gunicorn started no worker")


def request(port: int, method: str, path: str, token: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    headers = {"Authorization": f"Token {token}", "Content-Type": "application/json"}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


def upload(port: int, token: str, archive_id: int, clip: bytes, size: int) -> tuple[int, float]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.putrequest("PUT", f"/videos/{archive_id}/upload/source_file/")
    conn.putheader("Authorization", f"Token {token}")
    conn.putheader("Content-Type", "video/mp2t")
    conn.putheader("Content-Length", str(size))
    conn.endheaders()
    started = time.monotonic()
    block = clip * (CHUNK // len(clip) + 1)  # whole copies of the clip, about 1 MiB
    sent = 0
    while sent < size:
        piece = block[: min(len(block), size - sent)]
        conn.send(piece)
        sent += len(piece)
    response = conn.getresponse()
    response.read()
    return response.status, time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="200,1000", help="upload sizes in MB, comma list")
    parser.add_argument("--json", default=str(ROOT / "bench" / "results-upload-memory.json"))
    args = parser.parse_args()
    sizes = [int(item) for item in args.sizes.split(",")]

    import boto3

    work = Path(tempfile.mkdtemp(prefix="ffv-bench-upload-"))
    moto_port, web_port = free_port(), free_port()
    endpoint, bucket = f"http://127.0.0.1:{moto_port}", "ffv-bench"
    env = {key: value for key, value in os.environ.items()
           if not key.startswith(("FFV_", "DJANGO_", "PROMETHEUS_")) and key != "DATABASE_URL"}
    env.update({"PYTHONPATH": str(ROOT), "FFV_DEV": "1", "FFV_VAR_DIR": str(work / "var"),
                "MEDIA_ROOT": str(work / "media"),
                "FFV_STORAGE": "s3", "FFV_S3_ENDPOINT_URL": endpoint, "FFV_S3_BUCKET": bucket,
                "FFV_S3_ACCESS_KEY": "bench", "FFV_S3_SECRET_KEY": "bench-secret",
                "FFV_MAX_UPLOAD_SIZE": str(max(sizes) * MB + 1), "FFV_WEB_WORKERS": "1",
                "FFV_BIND": f"127.0.0.1:{web_port}", "FFV_WEB_BODY_TIMEOUT": "120"})
    (work / "var").mkdir()
    processes: list[subprocess.Popen] = []
    try:
        moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        processes.append(moto)
        wait_listening(moto_port, moto)
        s3 = boto3.client("s3", endpoint_url=endpoint, aws_access_key_id="bench", aws_secret_access_key="bench-secret",
                          region_name="us-east-1")
        s3.create_bucket(Bucket=bucket)
        subprocess.run([sys.executable, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=env, check=True,
                       capture_output=True)
        token = subprocess.run(
            [sys.executable, "manage.py", "shell", "-c",
             "from django.contrib.auth.models import User; from videos.auth_views import token_create; "
             "u = User.objects.create_superuser('bench', password=None); "
             "print(token_create(user=u, device_uuid='bench').key)"],
            cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout.strip().splitlines()[-1]
        web_log = (work / "web.log").open("ab")
        web = subprocess.Popen([sys.executable, "-m", "gunicorn", "-c", "findface_videos/gunicorn_conf.py"],
                               cwd=ROOT, env=env, stdout=web_log, stderr=subprocess.STDOUT)
        processes.append(web)
        wait_listening(web_port, web)
        worker = web_worker_pid(web.pid)
        clip = ts_clip()

        def new_archive() -> int:
            body = json.dumps({"camera_group": 1, "name": "bench",
                               "stream_settings": {"detectors": {"face": None, "body": None, "car": None}}})
            status, data = request(web_port, "POST", "/videos/", token, body.encode())
            assert status == 201, data
            return json.loads(data)["id"]

        # Warm-up: the first upload imports boto3 and PyAV into the worker and opens its connections.
        status, _ = upload(web_port, token, new_archive(), clip, 20 * MB)
        assert status == 201, status
        rows = []
        for size_mb in sizes:
            archive_id = new_archive()
            before = status_kb(worker, "VmRSS")
            Path(f"/proc/{worker}/clear_refs").write_text("5")  # the peak (VmHWM) starts over from now
            samples: list[int] = []
            done = threading.Event()

            def sample(samples: list[int] = samples, done: threading.Event = done) -> None:
                while not done.is_set():
                    samples.append(status_kb(worker, "VmRSS"))
                    time.sleep(0.05)

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            status, seconds = upload(web_port, token, archive_id, clip, size_mb * MB)
            done.set()
            sampler.join()
            peak = max(status_kb(worker, "VmHWM"), *samples)
            head = s3.list_objects_v2(Bucket=bucket, Prefix=f"videos/{archive_id}/")
            stored = sum(item["Size"] for item in head.get("Contents", ()))
            assert status == 201 and stored == size_mb * MB, (status, stored)
            rows.append({"size_mb": size_mb, "status": status, "seconds": round(seconds, 1),
                         "rss_before_mb": round(before / 1024, 1), "rss_peak_mb": round(peak / 1024, 1),
                         "added_mb": round((peak - before) / 1024, 1), "stored_bytes": stored})
            s3.delete_object(Bucket=bucket, Key=head["Contents"][0]["Key"])
    finally:
        for process in reversed(processes):
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()

    print(f"{'upload':>8} {'seconds':>8} {'RSS before':>11} {'RSS peak':>9} {'added':>7}")
    for row in rows:
        print(f"{row['size_mb']:>6}MB {row['seconds']:>8} {row['rss_before_mb']:>9}MB {row['rss_peak_mb']:>7}MB "
              f"{row['added_mb']:>5}MB")
    result = {"what": "web worker RSS during a raw-body upload to S3 (moto), FFV_S3_PART_SIZE_MB=8",
              "part_size_mb": 8, "rows": rows}
    Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    print(f"written {args.json}")


if __name__ == "__main__":
    main()
