"""Django model permissions for every method, reads included (view_*), so staff can grant read-only access."""

from __future__ import annotations

from collections.abc import Callable

from rest_framework import permissions


class ModelPermissions(permissions.DjangoModelPermissions):
    perms_map = {
        "GET": ["%(app_label)s.view_%(model_name)s"],
        "OPTIONS": [],
        "HEAD": ["%(app_label)s.view_%(model_name)s"],
        "POST": ["%(app_label)s.add_%(model_name)s"],
        "PUT": ["%(app_label)s.change_%(model_name)s"],
        "PATCH": ["%(app_label)s.change_%(model_name)s"],
        "DELETE": ["%(app_label)s.delete_%(model_name)s"],
    }

    def has_permission(self, request, view) -> bool:
        if not request.user or not request.user.is_authenticated:
            return False
        if getattr(view, "_ignore_model_permissions", False):
            return True
        model_cls = self._queryset(view).model
        handler = getattr(view, getattr(view, "action", None) or "", None)
        # An action may declare its own needs (process/ is a change of the archive, not an add).
        templates = getattr(handler, "required_perms", None)
        if templates is None:
            return request.user.has_perms(self.get_required_permissions(request.method, model_cls))
        kwargs = {"app_label": model_cls._meta.app_label, "model_name": model_cls._meta.model_name}
        return request.user.has_perms([template % kwargs for template in templates])


def requires(*perms: str) -> Callable:
    """Mark a viewset action with the model permissions it needs, e.g. `@requires("change")`."""

    def decorate(func: Callable) -> Callable:
        func.required_perms = [f"%(app_label)s.{perm}_%(model_name)s" for perm in perms]
        return func

    return decorate
