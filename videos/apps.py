from django.apps import AppConfig


class VideosConfig(AppConfig):
    name = "videos"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Video archives"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_init, post_save

        from videos import checks, tokens  # noqa: F401  (checks registers system checks)

        user_model = get_user_model()
        post_init.connect(tokens.remember_password_hash, sender=user_model, dispatch_uid="ffv-password-loaded")
        post_save.connect(tokens.revoke_tokens_on_password_change, sender=user_model,
                          dispatch_uid="ffv-password-changed")
