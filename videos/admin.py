from django.contrib import admin

from videos.models import AuthToken, BodyEvent, Camera, CameraGroup, CarEvent, Case, FaceEvent, VideoArchive


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
    readonly_fields = ["created_date", "modified_date", "job_state", "job_starts", "job_task_id", "job_worker",
                       "job_heartbeat", "job_msg", "job_checkpoint", "queued_date", "processing_start_date",
                       "processing_finish_date", "statistic", "file_size", "source_len", "face_count",
                       "body_count", "car_count"]


@admin.register(AuthToken)
class AuthTokenAdmin(admin.ModelAdmin):
    list_display = ["user", "device_uuid", "created_date", "expires_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["user__username", "device_uuid"]
    exclude = ["key"]
    readonly_fields = ["user", "device_uuid", "created_date", "expires_at"]


class EventAdmin(admin.ModelAdmin):
    list_display = ["id", "video_archive", "frame_timestamp", "track_id", "post_policy", "quality", "created_date"]
    list_filter = ["post_policy", "camera_group"]
    search_fields = ["video_archive__name"]
    raw_id_fields = ["video_archive", "camera_group"]


admin.site.register(FaceEvent, EventAdmin)
admin.site.register(BodyEvent, EventAdmin)
admin.site.register(CarEvent, EventAdmin)
