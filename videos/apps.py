from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "videos"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Video archives"

    def ready(self) -> None:
        from videos import checks  # noqa: F401  (registers system checks)
