"""Django's own error pages, in the API's error format (unknown routes, errors outside DRF views)."""

from __future__ import annotations

from django.http import JsonResponse
from django.utils.translation import gettext as _

from videos.errors import json_error_view


def bad_request(request, exception=None) -> JsonResponse:
    return json_error_view(400, "BAD_PARAM", _("Bad request."))


def permission_denied(request, exception=None) -> JsonResponse:
    return json_error_view(403, "PERMISSION_DENIED", _("You do not have permission to perform this action."))


def not_found(request, exception=None) -> JsonResponse:
    return json_error_view(404, "NOT_FOUND", _("Not found."))


def server_error(request) -> JsonResponse:
    return json_error_view(500, "INTERNAL", _("Internal server error."))
