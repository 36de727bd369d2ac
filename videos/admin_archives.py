"""The video archive's admin page: create one and upload its file, start and stop processing, watch its job.

Everything goes through the services the API uses: the form's fields are validated by the API's serializer (the
same URL policy and stream_settings rules), the file by `services.source_check` and stored by
`services.archive_upload_source` (the same size limit, probe and storage), and the actions queue and stop jobs
with `services.archive_process` / `services.archive_stop`.
"""

from __future__ import annotations

from typing import Any

from django import forms
from django.contrib import admin, messages
from django.core.files.uploadedfile import UploadedFile
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponseRedirect
from django.template.defaultfilters import filesizeformat
from django.utils.html import format_html
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from videos import cleanup, services
from videos.errors import ApiError, first_validation_error
from videos.health import health_status
from videos.job_messages import render_job_message
from videos.models import BUSY_STATES, VideoArchive
from videos.serializers.archives import VideoArchiveSerializer

# The form's fields the API's serializer validates (as POST/PUT /videos/ would).
API_FIELDS = ("camera_group", "camera", "case", "name", "url", "stream_settings")
STATUS_COLOURS = {"green": "#2e7d32", "yellow": "#b26a00", "red": "#c62828", "gray": "#616161"}


class SourceRefused(Exception):
    """The upload failed after the form was valid (storage, a race with a job): the admin's transaction is rolled
    back and the page says why."""

    def __init__(self, desc: str) -> None:
        super().__init__(desc)
        self.desc = desc


class VideoArchiveAdminForm(forms.ModelForm):
    upload = forms.FileField(
        required=False, label=_("Video file"),
        help_text=_("Uploaded as PUT /videos/{id}/upload/source_file/ does: the same size limit and checks. It "
                    "replaces the current source."),
    )

    class Meta:
        model = VideoArchive
        fields = list(API_FIELDS)

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        if "stream_settings" in self.fields:
            # Left empty, the API's defaults apply (the serializer completes what is given).
            self.fields["stream_settings"].required = False

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.errors:
            return cleaned
        self.api_data = self._api_validated(cleaned)
        if "stream_settings" in self.api_data:
            cleaned["stream_settings"] = self.api_data["stream_settings"]  # complete, as it will be stored
        upload: UploadedFile | None = cleaned.get("upload")
        if upload is not None:
            source = upload.temporary_file_path() if hasattr(upload, "temporary_file_path") else upload
            try:
                services.source_check(source=source, size=upload.size or 0)
            except ApiError as exc:
                self.add_error("upload", exc.desc)
            finally:
                upload.seek(0)
        return cleaned

    def _api_validated(self, cleaned: dict[str, Any]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for name in API_FIELDS:
            if name not in self.fields:
                continue  # read-only while a job runs
            value = cleaned.get(name)
            if name in ("camera_group", "camera", "case"):
                value = value.pk if value is not None else None
            elif name in ("name", "url"):
                value = value or None
            elif name == "stream_settings" and not value:
                continue  # the defaults, or what is stored (a partial write)
            data[name] = value
        instance = self.instance if self.instance.pk else None
        partial = instance is not None and len(data) < len(API_FIELDS)
        serializer = VideoArchiveSerializer(instance=instance, data=data, partial=partial)
        if serializer.is_valid():
            return dict(serializer.validated_data)
        for name, detail in serializer.errors.items():
            path, desc = first_validation_error(detail)
            field = name if name in self.fields else None
            self.add_error(field, f"{path}: {desc}" if path else desc)
        return {}


class VideoArchiveAdmin(admin.ModelAdmin):
    form = VideoArchiveAdminForm
    list_display = ["id", "name", "camera_group", "status", "progress", "job_message", "file_size", "source_len",
                    "face_count", "body_count", "car_count", "created_date"]
    list_filter = ["job_state", "camera_group"]
    search_fields = ["name"]
    actions = ["process_selected", "stop_selected"]
    readonly_fields = ["status", "progress", "job_message", "source", "created_date", "modified_date", "job_state",
                       "job_starts", "job_task_id", "job_claim", "job_purge_pending", "job_worker", "job_heartbeat",
                       "job_checkpoint", "queued_date", "processing_start_date", "processing_finish_date",
                       "statistic", "file_size", "source_len", "face_count", "body_count", "car_count"]

    # --- what the job shows

    @admin.display(description=_("Status"))
    def status(self, obj: VideoArchive) -> str:
        health = health_status(obj)
        return format_html('<span class="ffv-status" data-status="{}" style="color:{}" title="{}">{}</span>',
                           health["status"], STATUS_COLOURS.get(health["code"], "inherit"), health["code_desc"],
                           health["status"])

    @admin.display(description=_("Progress"))
    def progress(self, obj: VideoArchive) -> str:
        statistic = health_status(obj)["statistic"]
        fraction = statistic.get("progress") or 0
        eta = statistic.get("eta_seconds")
        text = f"{fraction * 100:.0f}%"
        if eta:
            text += " " + gettext("(about %(seconds)d s left)") % {"seconds": round(eta)}
        return format_html('<progress max="1" value="{}"></progress> <span class="ffv-progress">{}</span>',
                           fraction, text)

    @admin.display(description=_("Job message"))
    def job_message(self, obj: VideoArchive) -> str:
        return render_job_message(obj.job_msg_code, obj.job_msg_params)

    @admin.display(description=_("Source file"))
    def source(self, obj: VideoArchive) -> str:
        # The stored name and size only: media files are not served to browsers.
        if not obj.source_file:
            return "-"
        return f"{obj.source_file.name} ({filesizeformat(obj.file_size)})"

    def get_fields(self, request: HttpRequest, obj: VideoArchive | None = None) -> list[str]:
        if obj is None:
            return [*API_FIELDS, "upload"]
        # What the job is doing first, then what it runs from, then the rest of its state.
        job = ["status", "progress", "job_message"]
        rest = [name for name in self.readonly_fields if name not in job]
        if obj.job_state in BUSY_STATES:
            return [*job, *API_FIELDS, *rest]
        return [*job, *API_FIELDS, "upload", *rest]

    def get_readonly_fields(self, request: HttpRequest, obj: VideoArchive | None = None) -> list[str]:
        if obj is None:
            return []
        # What a queued or running job runs from stays as it is until the job ends (as PATCH answers 409).
        if obj.job_state in BUSY_STATES:
            return [*services.JOB_INPUT_FIELDS, *self.readonly_fields]
        return list(self.readonly_fields)

    def get_form(self, request: HttpRequest, obj: VideoArchive | None = None, change: bool = False, **kwargs):
        form = super().get_form(request, obj, change, **kwargs)
        if obj is not None and obj.job_state in BUSY_STATES:
            # (A declared field stays in a ModelForm whatever `fields` says; this class is made for this request.)
            form.base_fields.pop("upload", None)
        return form

    # --- writes, through the services

    def changeform_view(self, request, object_id=None, form_url="", extra_context=None):
        try:
            # (The admin runs this in a transaction: a refused upload leaves no new archive behind.)
            return super().changeform_view(request, object_id, form_url, extra_context)
        except SourceRefused as exc:
            self.message_user(request, exc.desc, messages.ERROR)
            return HttpResponseRedirect(request.get_full_path())

    def save_model(self, request: HttpRequest, obj: VideoArchive, form: VideoArchiveAdminForm, change: bool) -> None:
        if change:
            try:
                services.archive_update(archive=obj, data=form.api_data)
            except ApiError as exc:
                raise SourceRefused(exc.desc) from exc
        else:
            created = services.archive_create(data=form.api_data)
            for field in VideoArchive._meta.concrete_fields:
                setattr(obj, field.attname, getattr(created, field.attname))
            obj._state.adding, obj._state.db = False, created._state.db
        upload: UploadedFile | None = form.cleaned_data.get("upload")
        if upload is not None:
            cleanup.upload_temps_sweep_now_and_then()  # what killed web workers of this host left behind
            upload.seek(0)
            try:
                stored = services.archive_upload_source(archive_id=obj.pk, reader=upload, size=upload.size or 0)
            except ApiError as exc:
                raise SourceRefused(exc.desc) from exc
            obj.source_file, obj.file_size, obj.source_len = stored.source_file, stored.file_size, stored.source_len

    # Through the service, as DELETE /videos/{id}/ does: events leave their clusters and files are removed.
    def delete_model(self, request, obj) -> None:
        services.archive_delete(archive_id=obj.pk)

    def delete_queryset(self, request, queryset) -> None:
        for archive_id in list(queryset.values_list("pk", flat=True)):
            services.archive_delete(archive_id=archive_id)

    # --- actions

    @admin.action(description=_("Start processing"), permissions=["change"])
    def process_selected(self, request: HttpRequest, queryset: QuerySet[VideoArchive]) -> None:
        self._act(request, queryset, services.archive_process,
                  gettext("Queued for processing: %(count)d video archive(s)."))

    @admin.action(description=_("Stop processing"), permissions=["change"])
    def stop_selected(self, request: HttpRequest, queryset: QuerySet[VideoArchive]) -> None:
        busy = set(queryset.filter(job_state__in=BUSY_STATES).values_list("pk", flat=True))
        for archive in queryset.exclude(pk__in=busy).only("id", "name"):
            self.message_user(request, gettext("%(archive)s: it is neither queued nor being processed.")
                              % {"archive": archive}, messages.WARNING)
        self._act(request, queryset.filter(pk__in=busy), services.archive_stop,
                  gettext("Stopping: %(count)d video archive(s)."))

    def _act(self, request: HttpRequest, queryset: QuerySet[VideoArchive], service, done: str) -> None:
        count = 0
        for archive in queryset.only("id", "name").order_by("id"):
            try:
                service(archive_id=archive.pk)
            except ApiError as exc:
                self.message_user(request, f"{archive}: {exc.desc}", messages.ERROR)
            else:
                count += 1
        if count:
            self.message_user(request, done % {"count": count}, messages.SUCCESS)
