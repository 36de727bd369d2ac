from django.contrib import admin

from videos.models import AuthToken, Camera, CameraGroup, Case, VideoArchive


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
