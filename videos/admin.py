from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from videos.errors import TooManyRequests
from videos.event_services import event_delete
from videos.job_messages import render_job_message
from videos.login_throttle import client_address, login_attempt_begin, login_attempt_succeeded
from videos.models import (
    BUSY_STATES,
    AuthToken,
    BodyCluster,
    BodyEvent,
    Camera,
    CameraGroup,
    CarCluster,
    CarEvent,
    Case,
    FaceCluster,
    FaceEvent,
    VideoArchive,
    Webhook,
    WebhookDelivery,
)
from videos.services import JOB_INPUT_FIELDS, archive_delete


class ThrottledAdminAuthenticationForm(AdminAuthenticationForm):
    """The admin's login under the same failed-login counts as POST /auth/login/ (videos.login_throttle), or it
    would be the way around them: throttled before the password is hashed, whatever the password."""

    def clean(self):
        username, password = self.cleaned_data.get("username"), self.cleaned_data.get("password")
        if username is None or not password:
            return super().clean()
        try:
            attempt = login_attempt_begin(username=username, address=client_address(self.request))
        except TooManyRequests as exc:
            raise ValidationError(exc.desc, code="throttled") from exc
        cleaned_data = super().clean()  # a wrong password, or a user who may not use the admin, stays counted
        login_attempt_succeeded(attempt)
        return cleaned_data


admin.site.login_form = ThrottledAdminAuthenticationForm


@admin.register(CameraGroup)
class CameraGroupAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "created_date"]
    search_fields = ["name"]


@admin.register(Camera)
class CameraAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "camera_group", "created_date"]
    list_filter = ["camera_group"]
    search_fields = ["name"]


@admin.register(Case)
class CaseAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "created_date"]
    search_fields = ["name"]


@admin.register(VideoArchive)
class VideoArchiveAdmin(admin.ModelAdmin):
    list_display = ["id", "name", "camera_group", "job_state", "file_size", "source_len", "face_count",
                    "body_count", "car_count", "created_date"]
    list_filter = ["job_state", "camera_group"]
    search_fields = ["name"]
    readonly_fields = ["created_date", "modified_date", "job_state", "job_starts", "job_task_id", "job_claim",
                       "job_purge_pending", "job_worker", "job_heartbeat", "job_message", "job_checkpoint",
                       "queued_date", "processing_start_date", "processing_finish_date", "statistic", "file_size",
                       "source_len", "face_count", "body_count", "car_count"]
    exclude = ["job_msg_code", "job_msg_params"]

    @admin.display(description=_("Job message"))
    def job_message(self, obj: VideoArchive) -> str:
        return render_job_message(obj.job_msg_code, obj.job_msg_params)

    def get_readonly_fields(self, request, obj=None):
        # What a queued or running job runs from stays as it is until the job ends (as PATCH answers 409).
        if obj is not None and obj.job_state in BUSY_STATES:
            return [*self.readonly_fields, *JOB_INPUT_FIELDS, "source_file"]
        return self.readonly_fields

    # Through the service, as DELETE /videos/{id}/ does: events leave their clusters and files are removed.
    def delete_model(self, request, obj) -> None:
        archive_delete(archive_id=obj.pk)

    def delete_queryset(self, request, queryset) -> None:
        for archive_id in list(queryset.values_list("pk", flat=True)):
            archive_delete(archive_id=archive_id)


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "device_uuid", "created_date", "expires_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["user__username", "device_uuid"]
    # Not even the key's hash is shown; a token is made only by logging in.
    exclude = ["key_hash"]
    readonly_fields = ["user", "device_uuid", "created_date", "expires_at"]

    def has_add_permission(self, request) -> bool:
        return False


class EventAdmin(admin.ModelAdmin):
    """Read-only; deleting goes through the service, so pictures and cluster counts follow."""

    list_display = ["id", "video_archive", "frame_timestamp", "track_id", "post_policy", "quality", "cluster",
                    "created_date"]
    list_filter = ["post_policy", "camera_group", "video_archive"]
    search_fields = ["video_archive__name"]
    raw_id_fields = ["video_archive", "camera_group", "cluster"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def delete_model(self, request, obj) -> None:
        event_delete(event=obj)

    def delete_queryset(self, request, queryset) -> None:
        for event in queryset.defer("embedding").iterator():
            event_delete(event=event)


admin.site.register(FaceEvent, EventAdmin)
admin.site.register(BodyEvent, EventAdmin)
admin.site.register(CarEvent, EventAdmin)


class ClusterArchiveFilter(admin.SimpleListFilter):
    """Clusters with at least one event from the chosen archive."""

    title = "video archive"
    parameter_name = "video_archive"

    def lookups(self, request, model_admin):
        return [(archive.pk, str(archive)) for archive in VideoArchive.objects.only("id", "name").order_by("-id")[:200]]

    def queryset(self, request, queryset):
        value = self.value()
        if not value or not value.isdigit():
            return queryset
        return queryset.filter(events__video_archive_id=int(value)).distinct()


class ClusterAdmin(admin.ModelAdmin):
    """Read-only: clusters are made by processing and kept consistent by the event services."""

    list_display = ["id", "event_count", "best_event", "created_date", "modified_date"]
    list_filter = [ClusterArchiveFilter]
    raw_id_fields = ["best_event"]
    readonly_fields = ["event_count", "best_event", "created_date", "modified_date"]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        # Deleting one would leave its archives' cluster counts behind; delete its events instead.
        return False


admin.site.register(FaceCluster, ClusterAdmin)
admin.site.register(BodyCluster, ClusterAdmin)
admin.site.register(CarCluster, ClusterAdmin)



class WebhookDeliveryInline(admin.TabularInline):
    """A webhook's deliveries, read-only, newest first: what an operator looks at when a receiver fails."""

    model = WebhookDelivery
    fields = ["uuid", "event_type", "ordering_key", "status", "attempts", "last_status_code", "last_error",
              "next_attempt_date", "created_date", "delivered_date"]
    readonly_fields = fields
    ordering = ["-id"]
    extra = 0
    max_num = 0
    can_delete = False


class WebhookAdminForm(forms.ModelForm):
    class Meta:
        model = Webhook
        fields = ["name", "url", "secret", "active", "event_types", "camera_groups", "watch_lists", "min_confidence"]

    def clean_url(self) -> str:
        """The API's check (url policy of archive sources, URI characters), in the admin too."""
        from rest_framework.exceptions import ValidationError as DRFValidationError

        from videos.serializers.webhooks import validate_webhook_url

        url = self.cleaned_data["url"]
        try:
            return validate_webhook_url(url)
        except DRFValidationError as exc:
            raise ValidationError([str(message) for message in exc.detail]) from exc


@admin.register(Webhook)
class WebhookAdmin(admin.ModelAdmin):
    """The secret is never shown: left empty on a change, the current one stays."""

    form = WebhookAdminForm
    list_display = ["id", "name", "url", "active", "event_types", "created_date"]
    list_filter = ["active"]
    filter_horizontal = ["camera_groups"]
    inlines = [WebhookDeliveryInline]

    def get_form(self, request, obj=None, change=False, **kwargs):
        form = super().get_form(request, obj, change=change, **kwargs)
        secret = form.base_fields["secret"]
        secret.widget = forms.PasswordInput(render_value=False)
        secret.required = obj is None
        return form

    def save_model(self, request, obj, form, change) -> None:
        if change and not form.cleaned_data.get("secret"):
            obj.secret = Webhook.objects.filter(pk=obj.pk).values_list("secret", flat=True).first() or ""
        super().save_model(request, obj, form, change)
