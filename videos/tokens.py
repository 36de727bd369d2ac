"""API tokens: issued at login, stored as a SHA-256 of the key, revoked by logout and by a change of password."""

from __future__ import annotations

import hashlib
import secrets
from typing import Any

from django.conf import settings
from django.utils import timezone

from videos.models import AuthToken


def token_key_hash(key: str) -> str:
    # A key is 256 random bits, so a plain SHA-256 is enough: there is no dictionary to try, unlike passwords.
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user, device_uuid: str) -> AuthToken:
    """A new token; its clear `key` is on the returned instance only (the login response shows it once)."""
    key = secrets.token_hex(32)
    token = AuthToken.objects.create(
        key_hash=token_key_hash(key),
        user=user,
        device_uuid=device_uuid,
        expires_at=timezone.now() + settings.FFV_TOKEN_TTL,
    )
    token.key = key
    return token


def token_revoke(*, token: AuthToken) -> None:
    AuthToken.objects.filter(pk=token.pk).update(revoked=True)


def user_tokens_revoke(*, user_id: int) -> int:
    return AuthToken.objects.filter(user_id=user_id, revoked=False).update(revoked=True)


# --- a change of password revokes the user's tokens, whichever way it is made: the admin form, `manage.py
# changepassword`, set_password() and save(), set_unusable_password(), a new hash written to the field and saved
# (not with update_fields=["password"] alone, which is how Django's own re-hash looks). A queryset update() of the
# password column sends no signal and is not seen.


def remember_password_hash(sender: type, instance: Any, **kwargs: Any) -> None:
    """post_init: the hash as loaded (not read when deferred: that would cost a query per user loaded)."""
    instance._ffv_loaded_password = instance.__dict__.get("password")


def revoke_tokens_on_password_change(sender: type, instance: Any, created: bool, raw: bool,
                                     update_fields: frozenset[str] | None, **kwargs: Any) -> None:
    """post_save: revoke every token of a user whose stored password hash changed."""
    loaded = getattr(instance, "_ffv_loaded_password", None)
    saved = instance.__dict__.get("password")
    instance._ffv_loaded_password = saved
    if created or raw or saved is None or saved == loaded:
        return
    # Django re-hashing the same password at a login (a newer hasher, more iterations) changes no password: its
    # setter in check_password() forgets the raw password (`_password`) before saving the password field alone.
    if getattr(instance, "_password", None) is None and update_fields == frozenset({"password"}):
        return
    user_tokens_revoke(user_id=instance.pk)
