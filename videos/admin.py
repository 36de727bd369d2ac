from django import forms
from django.contrib import admin
from django.contrib.admin.forms import AdminAuthenticationForm
from django.core.exceptions import ValidationError
from django.db.models import QuerySet
from django.forms.models import BaseInlineFormSet
from django.http import HttpRequest
from django.urls import reverse
from django.utils.html import format_html
from django.utils.translation import gettext_lazy as _
from django.utils.translation import ngettext

from videos import admin_watchlists  # noqa: F401  (registers watch lists, cards and card photos)
from videos.admin_archives import VideoArchiveAdmin
from videos.admin_pictures import PicturesAdminMixin, thumbnail_html, thumbnails_html
from videos.errors import TooManyRequests
from videos.event_services import event_delete
from videos.login_throttle import client_address, login_attempt_begin, login_attempt_succeeded
from videos.models import (
    AuthToken,
    BodyCluster,
    BodyEvent,
    Camera,
    CameraGroup,
    CarCluster,
    CarEvent,
    Case,
    Cluster,
    Event,
    FaceCluster,
    FaceEvent,
    VideoArchive,
    Webhook,
    WebhookDelivery,
)


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


admin.site.register(VideoArchive, VideoArchiveAdmin)


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


class EventAdmin(PicturesAdminMixin, admin.ModelAdmin):
    """Read-only, with its pictures; deleting goes through the service, so pictures and cluster counts follow."""

    picture_fields = ("thumbnail", "fullframe")
    list_display = ["id", "thumbnail_picture", "video_archive", "frame_timestamp", "track_id", "post_policy",
                    "quality", "cluster", "created_date"]
    list_display_links = ["id", "thumbnail_picture"]
    list_filter = ["post_policy", "camera_group", "video_archive"]
    list_select_related = ["video_archive", "cluster"]
    search_fields = ["video_archive__name"]
    raw_id_fields = ["video_archive", "camera_group", "cluster"]
    # The file fields would show links to media URLs, which are not served: the pictures show instead.
    exclude = ["thumbnail", "fullframe", "normalized"]
    readonly_fields = ["thumbnail_picture", "fullframe_picture"]

    @admin.display(description=_("Thumbnail"))
    def thumbnail_picture(self, obj: Event) -> str:
        return thumbnail_html(obj)

    @admin.display(description=_("Full frame"))
    def fullframe_picture(self, obj: Event) -> str:
        return thumbnail_html(obj, "fullframe", size=480)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Event]:
        return super().get_queryset(request).defer("embedding")

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


# At most this many of a cluster's events show on its page, the best first; a link leads to all of them.
CLUSTER_PAGE_EVENTS = 60


class ClusterAdmin(admin.ModelAdmin):
    """Read-only: clusters are made by processing and kept consistent by the event services."""

    list_display = ["id", "best_picture", "name", "event_count", "best_event", "created_date", "modified_date"]
    list_display_links = ["id", "best_picture"]
    list_filter = [ClusterArchiveFilter]
    raw_id_fields = ["best_event"]
    readonly_fields = ["best_picture", "event_count", "best_event", "created_date", "modified_date", "event_pictures"]

    @admin.display(description=_("Best picture"))
    def best_picture(self, obj: Cluster) -> str:
        return thumbnail_html(obj.best_event)

    @admin.display(description=_("Its events"))
    def event_pictures(self, obj: Cluster) -> str:
        events = obj.events.defer("embedding").order_by("-quality", "id")[:CLUSTER_PAGE_EVENTS]
        gallery = thumbnails_html(events)
        opts = obj.events.model._meta
        listing = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist") + f"?cluster__id__exact={obj.pk}"
        more = ngettext("All %(count)d event", "All %(count)d events", obj.event_count) % {"count": obj.event_count}
        return format_html('{}<p><a href="{}">{}</a></p>', gallery, listing, more)

    def get_queryset(self, request: HttpRequest) -> QuerySet[Cluster]:
        return super().get_queryset(request).select_related("best_event").defer("centroid", "best_event__embedding")

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



# A webhook's page shows this many of its newest deliveries (a busy one has many thousands).
WEBHOOK_PAGE_DELIVERIES = 50


class _NewestDeliveries(BaseInlineFormSet):
    def get_queryset(self):
        return super().get_queryset().order_by("-id")[:WEBHOOK_PAGE_DELIVERIES]


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
    formset = _NewestDeliveries


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
