"""Video archives and the things they belong to.

Job state lives here, on the archive row, never in Celery's result backend: the API reads it, the worker claims
it with a conditional UPDATE and writes progress into it.
"""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import F, Value
from django.db.models.functions import Coalesce
from django.utils.translation import gettext_lazy as _


class CameraGroup(models.Model):
    name = models.CharField(max_length=256, unique=True)
    comment = models.CharField(max_length=2048, blank=True, default="")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Camera(models.Model):
    camera_group = models.ForeignKey(CameraGroup, on_delete=models.PROTECT, related_name="cameras")
    name = models.CharField(max_length=256)
    comment = models.CharField(max_length=2048, blank=True, default="")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return self.name


class Case(models.Model):
    """Kept only so that `case` and `case_in` of the API keep working (FindFace Multi 2.0+ has no cases)."""

    name = models.CharField(max_length=256)
    created_date = models.DateTimeField(auto_now_add=True)

    def __str__(self) -> str:
        return self.name


class JobState(models.TextChoices):
    IDLE = "idle", _("Idle")
    QUEUED = "queued", _("Queued")
    STARTING = "starting", _("Starting")
    IN_PROGRESS = "in_progress", _("In progress")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    INTERRUPTED = "interrupted", _("Interrupted")


RUNNING_STATES = (JobState.STARTING, JobState.IN_PROGRESS)
BUSY_STATES = (JobState.QUEUED, JobState.STARTING, JobState.IN_PROGRESS)


def source_upload_to(instance: VideoArchive, filename: str) -> str:
    # The client's file name never reaches the storage path (no traversal, no clashes).
    return f"videos/{instance.pk}/{filename}"


class VideoArchive(models.Model):
    camera_group = models.ForeignKey(CameraGroup, on_delete=models.PROTECT, related_name="video_archives")
    camera = models.ForeignKey(
        Camera, on_delete=models.SET_NULL, null=True, blank=True, related_name="video_archives"
    )
    case = models.ForeignKey(Case, on_delete=models.SET_NULL, null=True, blank=True, related_name="video_archives")
    name = models.CharField(max_length=256, null=True, blank=True, db_index=True)
    url = models.CharField(max_length=2048, null=True, blank=True)
    # Where events are forwarded in the FindFace family; kept for the `save_to` filter, set in the admin.
    save_to = models.CharField(max_length=2048, null=True, blank=True, db_index=True)
    stream_settings = models.JSONField(default=dict)
    # The processing.stream_settings version whose defaults complete stream_settings (set whenever they are written).
    stream_settings_version = models.PositiveSmallIntegerField(default=1)
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    source_file = models.FileField(upload_to=source_upload_to, max_length=512, blank=True, default="")
    file_size = models.BigIntegerField(default=0)
    source_len = models.FloatField(null=True, blank=True)

    # Job state; see videos.health for how it becomes the API's health_status.
    job_state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.IDLE, db_index=True)
    stop_requested = models.BooleanField(default=False)
    # Attempts a worker started of the current job (resumes included); capped by FFV_JOB_MAX_ATTEMPTS.
    job_starts = models.PositiveIntegerField(default=0)
    # The job: set by process/ (the Celery task id of its messages, re-sent with the same id by the sweeper).
    job_task_id = models.CharField(max_length=64, blank=True, default="")
    # The attempt: a new token at every claim; every write of a worker names it, so a worker whose claim was
    # taken over (its heartbeat ran out) writes nothing more and stops.
    job_claim = models.CharField(max_length=64, blank=True, default="")
    # Set when a job is queued (process/, process_video); the first claim purges the previous run's results in
    # the same transaction and clears it. A claim that finds it clear resumes from the checkpoint.
    job_purge_pending = models.BooleanField(default=False)
    job_worker = models.CharField(max_length=256, blank=True, default="")
    job_heartbeat = models.DateTimeField(null=True, blank=True, db_index=True)
    # Why the job failed, or what went wrong in a job that completed: a code of videos.job_messages and its
    # parameters, rendered in the request's language (never server paths).
    job_msg_code = models.CharField(max_length=64, blank=True, default="")
    job_msg_params = models.JSONField(default=dict, blank=True)
    job_checkpoint = models.JSONField(default=dict, blank=True)
    queued_date = models.DateTimeField(null=True, blank=True)
    processing_start_date = models.DateTimeField(null=True, blank=True)
    processing_finish_date = models.DateTimeField(null=True, blank=True)
    statistic = models.JSONField(default=dict, blank=True)

    face_count = models.PositiveIntegerField(default=0)
    body_count = models.PositiveIntegerField(default=0)
    car_count = models.PositiveIntegerField(default=0)
    face_cluster_count = models.PositiveIntegerField(null=True, blank=True, default=0)
    body_cluster_count = models.PositiveIntegerField(null=True, blank=True, default=0)
    car_cluster_count = models.PositiveIntegerField(null=True, blank=True, default=0)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["camera_group", "-id"], name="archive_group_id_idx"),
            models.Index(fields=["case", "-id"], name="archive_case_id_idx"),
            models.Index(fields=["job_state", "job_heartbeat"], name="archive_job_lease_idx"),
            # The list's orderings as videos.pagination sorts them (NULL names as ""; ties by id in the same
            # direction), so a page is an index range read either way.
            models.Index(Coalesce(F("name"), Value("")), F("id"), name="archive_name_order_idx"),
            models.Index(fields=["created_date", "id"], name="archive_created_order_idx"),
            models.Index(F("camera_group"), Coalesce(F("name"), Value("")), F("id"), name="archive_group_name_idx"),
            models.Index(fields=["camera_group", "created_date", "id"], name="archive_group_created_idx"),
            # `save_to=` (a sink shared by many archives): its page in id order, not a sort of every match.
            models.Index(fields=["save_to", "-id"], name="archive_save_to_id_idx"),
        ]

    def __str__(self) -> str:
        return self.name or f"video archive {self.pk}"

    @property
    def has_source(self) -> bool:
        return bool(self.source_file) or bool(self.url)

    @property
    def active(self) -> bool:
        return self.job_state in RUNNING_STATES

    @property
    def queued(self) -> bool:
        return self.job_state == JobState.QUEUED

    @property
    def finished(self) -> bool:
        return self.job_state == JobState.COMPLETED


class ArchiveChunk(models.Model):
    """One time chunk of a long archive's job (FFV_CHUNK_SECONDS), run as a task of its own (videos.chunks).

    It has the job fields of an archive (claim, attempts, heartbeat, checkpoint, state); the archive's state is
    derived from its chunks'. `overlap` holds the tracked boxes of the stretches shared with the neighbouring
    chunks, which stitching compares (processing.chunks).
    """

    video_archive = models.ForeignKey(VideoArchive, on_delete=models.CASCADE, related_name="chunks")
    job_task_id = models.CharField(max_length=64)  # the archive's job this chunk belongs to
    index = models.PositiveIntegerField()
    start = models.FloatField()  # seconds; a keyframe
    end = models.FloatField(null=True, blank=True)  # where the next chunk starts; null: the end of the video
    task_id = models.CharField(max_length=64, unique=True)
    state = models.CharField(max_length=16, choices=JobState.choices, default=JobState.QUEUED, db_index=True)
    claim = models.CharField(max_length=64, blank=True, default="")
    starts = models.PositiveIntegerField(default=0)
    worker = models.CharField(max_length=256, blank=True, default="")
    heartbeat = models.DateTimeField(null=True, blank=True)
    queued_date = models.DateTimeField(null=True, blank=True)
    finish_date = models.DateTimeField(null=True, blank=True)
    msg_code = models.CharField(max_length=64, blank=True, default="")
    msg_params = models.JSONField(default=dict, blank=True)
    checkpoint = models.JSONField(default=dict, blank=True)
    statistic = models.JSONField(default=dict, blank=True)
    overlap = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["video_archive", "index"]
        constraints = [
            models.UniqueConstraint(fields=["video_archive", "job_task_id", "index"], name="chunk_once_per_job"),
        ]
        indexes = [models.Index(fields=["state", "heartbeat"], name="chunk_lease_idx")]

    def __str__(self) -> str:
        return f"chunk {self.index} of video archive {self.video_archive_id}"


class AuthToken(models.Model):
    """An API token with an expiry; `POST /auth/logout/` and a change of the user's password revoke it.

    Only the SHA-256 of the key is stored (videos.tokens): a read of the table or a backup gives no usable token.
    """

    key_hash = models.CharField(max_length=64, unique=True, help_text="SHA-256 of the key, hex.")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    device_uuid = models.CharField(max_length=256, blank=True, default="")
    created_date = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    revoked = models.BooleanField(default=False)

    # The key in clear: set only on the instance `token_create` returns, for the login response; never stored.
    key: str = ""

    def __str__(self) -> str:
        return f"token {self.pk} of {self.user}"


class LoginThrottle(models.Model):
    """Failed logins of one client address or one username in the current window (videos.login_throttle).

    In the database so that every web worker process sees the same counts.
    """

    key = models.CharField(max_length=64, unique=True, help_text="SHA-256 of 'addr:<address>' or 'user:<name>'.")
    failures = models.PositiveIntegerField(default=0)
    window_start = models.DateTimeField(db_index=True)

    def __str__(self) -> str:
        return f"{self.failures} failures since {self.window_start:%Y-%m-%d %H:%M:%S}"


class EventKind(models.TextChoices):
    FACE = "face", _("Face")
    BODY = "body", _("Body")
    CAR = "car", _("Car")


class Event(models.Model):
    """One posted object of a track: where and when in which archive, its box, quality and pictures.

    (video_archive, track_id, post_policy, frame_index) is unique: a worker that replays part of a video after a
    crash produces the same rows again, and those inserts are ignored instead of duplicating events.
    """

    video_archive = models.ForeignKey(VideoArchive, on_delete=models.CASCADE, related_name="+")
    camera_group = models.ForeignKey(CameraGroup, on_delete=models.CASCADE, related_name="+")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    frame_timestamp = models.FloatField(help_text="Seconds into the video.")
    frame_index = models.PositiveIntegerField()
    frame_coords_left = models.IntegerField()
    frame_coords_top = models.IntegerField()
    frame_coords_right = models.IntegerField()
    frame_coords_bottom = models.IntegerField()
    quality = models.FloatField(db_index=True)
    confidence = models.FloatField()
    track_id = models.PositiveIntegerField()
    post_policy = models.CharField(max_length=16)
    thumbnail = models.FileField(max_length=512)
    fullframe = models.FileField(max_length=512)
    normalized = models.FileField(max_length=512, blank=True, default="")
    detector_params = models.JSONField(default=dict)
    # L2-normalised float32 vector (little-endian bytes): FaceNet 512-d for faces, the tracker's appearance
    # embedder for bodies and cars; null where no embedder ran.
    embedding = models.BinaryField(null=True, blank=True, editable=False)

    class Meta:
        abstract = True
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk} of archive {self.video_archive_id}"


def _event_meta(name: str):
    return {
        "constraints": [
            models.UniqueConstraint(
                fields=["video_archive", "track_id", "post_policy", "frame_index"], name=f"{name}_once_per_track_frame"
            )
        ],
        "indexes": [
            models.Index(fields=["video_archive", "-id"], name=f"{name}_archive_id_idx"),
            # The list's orderings (ties by id in the same direction): a page is an index range read.
            models.Index(fields=["quality", "id"], name=f"{name}_quality_order_idx"),
            models.Index(fields=["created_date", "id"], name=f"{name}_created_order_idx"),
        ],
    }


class Cluster(models.Model):
    """A group of events of one kind that look alike (one person, one car), across archives and camera groups.

    `centroid` is the sum of the members' unit embeddings (float32 bytes): adding or removing a member updates it
    without reading the others, and its direction is the cluster's mean appearance. An empty cluster (only a
    `curated` one stays when empty) keeps its last direction there instead; the first event to join replaces it.
    """

    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)
    event_count = models.PositiveIntegerField(default=0)
    centroid = models.BinaryField(editable=False)
    # A person's name (videos.persons); "" for a cluster nobody named.
    name = models.CharField(max_length=256, blank=True, default="")
    # Named, merged or split by a person: kept when its events go (re-processing, deletions), with its last
    # direction as `centroid` and event_count 0, so that the events of a later run can come back to it.
    curated = models.BooleanField(default=False)

    class Meta:
        abstract = True
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"{self._meta.verbose_name} {self.pk}"


def _cluster_indexes(name: str) -> list[models.Index]:
    # The list's orderings (ties by id in the same direction): a page is an index range read.
    return [
        models.Index(fields=["event_count", "id"], name=f"{name}_count_order_idx"),
        models.Index(fields=["created_date", "id"], name=f"{name}_created_order_idx"),
    ]


class FaceCluster(Cluster):
    best_event = models.ForeignKey("FaceEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    # The person of a watch list card this cluster is (set by staff: PATCH /clusters/faces/{id}/).
    card = models.ForeignKey("Card", null=True, blank=True, on_delete=models.SET_NULL, related_name="clusters")

    class Meta(Cluster.Meta):
        indexes = _cluster_indexes("facecluster")


class BodyCluster(Cluster):
    best_event = models.ForeignKey("BodyEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Cluster.Meta):
        indexes = _cluster_indexes("bodycluster")


class CarCluster(Cluster):
    best_event = models.ForeignKey("CarEvent", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    class Meta(Cluster.Meta):
        indexes = _cluster_indexes("carcluster")


class FaceEvent(Event):
    cluster = models.ForeignKey(FaceCluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")
    # Watch list matching (videos.matching): the best card of the active lists that apply to the event's camera
    # group, its similarity (`confidence` in the API; the model's `confidence` is the detector's), and the lists
    # through which it matched (a table to filter by, and a copy on the row that a page shows without a query).
    # `match_pending` marks events whose match must be (re)computed: new events, and
    # events that a change of a card, its photos or a list may have changed.
    matched_card = models.ForeignKey("Card", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    match_confidence = models.FloatField(null=True, blank=True)
    matched_lists = models.ManyToManyField("WatchList", blank=True, related_name="+")  # for filtering
    matched_list_ids = models.JSONField(default=list, blank=True)  # the same ids, sorted, for showing
    match_pending = models.BooleanField(default=True)

    class Meta(Event.Meta):
        constraints = _event_meta("faceevent")["constraints"]
        indexes = [
            *_event_meta("faceevent")["indexes"],
            models.Index(fields=["id"], condition=models.Q(match_pending=True), name="faceevent_match_pending_idx"),
            models.Index(fields=["matched_card", "-id"], name="faceevent_card_id_idx"),
            models.Index(fields=["match_confidence", "id"], name="faceevent_match_conf_idx"),
        ]


class BodyEvent(Event):
    cluster = models.ForeignKey(BodyCluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")

    class Meta(Event.Meta):
        constraints = _event_meta("bodyevent")["constraints"]
        indexes = _event_meta("bodyevent")["indexes"]


class CarEvent(Event):
    cluster = models.ForeignKey(CarCluster, null=True, blank=True, on_delete=models.SET_NULL, related_name="events")

    class Meta(Event.Meta):
        constraints = _event_meta("carevent")["constraints"]
        indexes = _event_meta("carevent")["indexes"]


class RowCount(models.Model):
    """A counter row of a table's exact row count, kept by database triggers (videos.row_counts).

    Unmanaged: migration 0007 creates the table and its triggers, and Django's test flush leaves it alone.
    """

    pk = models.CompositePrimaryKey("table_name", "slot")
    table_name = models.CharField(max_length=64)
    slot = models.IntegerField()
    rows = models.BigIntegerField()

    class Meta:
        managed = False
        db_table = "videos_rowcount"

    def __str__(self) -> str:
        return f"{self.table_name}[{self.slot}] = {self.rows}"


class ClusterPin(models.Model):
    """Where a person put an event of an archive that is being re-processed (videos.persons).

    When an archive's events leave their clusters (a new run purges them), each event of a curated cluster
    leaves a pin keyed like the event's uniqueness (track, policy, frame); when the archive is clustered again,
    its new events with those keys go straight back to the pinned cluster, and the pins are dropped. Events a run
    makes differently (other settings) find their cluster by similarity as any other.
    """

    video_archive = models.ForeignKey(VideoArchive, on_delete=models.CASCADE, related_name="+")
    kind = models.CharField(max_length=8, choices=EventKind.choices)
    cluster_id = models.PositiveBigIntegerField()  # no foreign key: a pin to a cluster that went is ignored
    track_id = models.PositiveIntegerField()
    post_policy = models.CharField(max_length=16)
    frame_index = models.PositiveIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["video_archive", "kind", "track_id", "post_policy", "frame_index"],
                                    name="clusterpin_once_per_event"),
        ]

    def __str__(self) -> str:
        return f"pin of a {self.kind} event of archive {self.video_archive_id} to cluster {self.cluster_id}"


EVENT_MODELS: dict[str, type[Event]] = {"face": FaceEvent, "body": BodyEvent, "car": CarEvent}
CLUSTER_MODELS: dict[str, type[Cluster]] = {"face": FaceCluster, "body": BodyCluster, "car": CarCluster}


class FaceDetection(models.Model):
    """A face found by `POST /detect/` in an uploaded photo: a probe for `looks_like=detection:<id>` searches."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE,
                                   related_name="+")
    frame_coords_left = models.IntegerField()
    frame_coords_top = models.IntegerField()
    frame_coords_right = models.IntegerField()
    frame_coords_bottom = models.IntegerField()
    confidence = models.FloatField()
    quality = models.FloatField()
    embedding = models.BinaryField(editable=False)

    class Meta:
        ordering = ["-created_date"]

    def __str__(self) -> str:
        return f"face detection {self.pk}"


class ExportStatus(models.TextChoices):
    QUEUED = "queued", _("Queued")
    IN_PROGRESS = "in_progress", _("In progress")
    COMPLETED = "completed", _("Completed")
    FAILED = "failed", _("Failed")
    EXPIRED = "expired", _("Expired")


class ExportFormat(models.TextChoices):
    CSV = "csv", "CSV"
    ZIP = "zip", "ZIP"


class Export(models.Model):
    """Events of one kind selected by the event list's filters, written as CSV (or a ZIP of CSV and thumbnails)
    by a background task (videos.exports); downloadable by its owner (or staff) until `expires_at`.

    Job state lives here like an archive's: the task claims the row with a conditional UPDATE (`claim`), writes
    `progress` and `heartbeat` while it runs, and a sweeper re-sends a queued or abandoned one.
    """

    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    kind = models.CharField(max_length=8, choices=EventKind.choices)
    format = models.CharField(max_length=8, choices=ExportFormat.choices)
    # The event list's query parameters, {name: [values]}, validated by its FilterSet when the export was made.
    filters = models.JSONField(default=dict, blank=True)
    limit = models.PositiveIntegerField()
    # The absolute URL root of the API the export was asked through (event picture URLs in the CSV).
    base_url = models.CharField(max_length=2048, blank=True, default="")
    status = models.CharField(max_length=16, choices=ExportStatus.choices, default=ExportStatus.QUEUED,
                              db_index=True)
    progress = models.FloatField(default=0.0)
    total = models.PositiveIntegerField(null=True, blank=True)
    row_count = models.PositiveIntegerField(default=0)
    truncated = models.BooleanField(default=False)
    task_id = models.CharField(max_length=64, blank=True, default="")
    claim = models.CharField(max_length=64, blank=True, default="")
    heartbeat = models.DateTimeField(null=True, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    file = models.FileField(max_length=512, blank=True, default="")
    file_size = models.BigIntegerField(default=0)
    msg_code = models.CharField(max_length=64, blank=True, default="")
    finish_date = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, db_index=True)

    class Meta:
        ordering = ["-id"]
        indexes = [models.Index(fields=["status", "heartbeat"], name="export_lease_idx")]

    def __str__(self) -> str:
        return f"export {self.pk} ({self.kind} events, {self.format})"


class WatchList(models.Model):
    """A list of cards to look for in the archives of some camera groups (all of them when none is named)."""

    name = models.CharField(max_length=256, unique=True)
    color = models.CharField(max_length=6, default="ffffff", help_text="RGB in hex, e.g. ff0000.")
    comment = models.CharField(max_length=2048, blank=True, default="")
    active = models.BooleanField(default=True)
    threshold = models.FloatField(default=0.7, help_text="Least similarity (0..1) of a face to a card's photo.")
    camera_groups = models.ManyToManyField(CameraGroup, blank=True, related_name="watch_lists")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name


class Card(models.Model):
    """A person to look for: one or more face photos (CardPhoto), in one or more watch lists."""

    name = models.CharField(max_length=256, db_index=True)
    comment = models.CharField(max_length=2048, blank=True, default="")
    active = models.BooleanField(default=True)
    watch_lists = models.ManyToManyField(WatchList, blank=True, related_name="cards")
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name


class CardPhoto(models.Model):
    """One face photo of a card: the picture as uploaded, the face's box and its FaceNet embedding."""

    card = models.ForeignKey(Card, on_delete=models.CASCADE, related_name="photos")
    image = models.FileField(max_length=512)
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    frame_coords_left = models.IntegerField()
    frame_coords_top = models.IntegerField()
    frame_coords_right = models.IntegerField()
    frame_coords_bottom = models.IntegerField()
    confidence = models.FloatField()
    quality = models.FloatField()
    embedding = models.BinaryField(editable=False)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return f"photo {self.pk} of card {self.card_id}"


class WebhookEventType(models.TextChoices):
    ARCHIVE_STATUS = "archive.status", _("Archive status changed")
    EVENT_MATCHED = "event.matched", _("Event matched a watch list")
    CLUSTER_CREATED = "cluster.created", _("New cluster")


class Webhook(models.Model):
    """A subscription: events of the chosen types that pass its filters are POSTed, signed, to `url`.

    `secret` keys the HMAC signature of each delivery (processing.webhooks); the API never shows it. Filters: camera
    groups (none: all) for every type; watch lists (ids; none: all) and `min_confidence` for matched events only.
    """

    name = models.CharField(max_length=256, blank=True, default="")
    url = models.CharField(max_length=2048)
    secret = models.CharField(max_length=256)
    active = models.BooleanField(default=True)
    event_types = models.JSONField(default=list)
    camera_groups = models.ManyToManyField(CameraGroup, blank=True, related_name="+")
    # Watch list ids (the watch lists' own table belongs to matching); a matched event passes when one of its lists
    # is here.
    watch_lists = models.JSONField(default=list, blank=True)
    min_confidence = models.FloatField(null=True, blank=True)
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    modified_date = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-id"]

    def __str__(self) -> str:
        return self.name or f"webhook {self.pk}"


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", _("Pending")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")


class WebhookDelivery(models.Model):
    """One POST of one or more events to one webhook: the outbox row, written in the transaction that produced the
    events, and the record of its attempts (videos.webhooks.delivery).

    Deliveries of one webhook with the same `ordering_key` (one archive) go out in id order: one is sent only once
    every earlier one is delivered or has failed for good. `uuid` is the `X-FFV-Delivery` header, the same on every
    attempt, by which a receiver drops a delivery it has already had.
    """

    webhook = models.ForeignKey(Webhook, on_delete=models.CASCADE, related_name="deliveries")
    uuid = models.UUIDField(unique=True, editable=False)
    event_type = models.CharField(max_length=32, choices=WebhookEventType.choices)
    ordering_key = models.CharField(max_length=64)
    events = models.JSONField(default=list)
    event_count = models.PositiveIntegerField(default=0)
    status = models.CharField(max_length=16, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING)
    attempts = models.PositiveIntegerField(default=0)
    last_error = models.CharField(max_length=512, blank=True, default="")
    last_status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    next_attempt_date = models.DateTimeField()
    # The attempt in flight: its token and when its worker counts as gone (then the sweeper sends it again).
    claim = models.CharField(max_length=64, blank=True, default="")
    claimed_until = models.DateTimeField(null=True, blank=True)
    created_date = models.DateTimeField(auto_now_add=True, db_index=True)
    delivered_date = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-id"]
        indexes = [
            models.Index(fields=["webhook", "ordering_key", "status", "id"], name="delivery_line_idx"),
            models.Index(fields=["status", "next_attempt_date"], name="delivery_due_idx"),
            models.Index(fields=["webhook", "-id"], name="delivery_webhook_id_idx"),
        ]

    def __str__(self) -> str:
        return f"delivery {self.uuid} of {self.webhook_id}"
