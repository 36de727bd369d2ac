"""One error format for every failure: `{"code", "desc", "param", "traceback"}` (api-notes.md).

Services raise the domain exceptions below; `exception_handler` maps them, DRF's own exceptions and Django's
Http404/PermissionDenied to the envelope.
"""

from __future__ import annotations

import logging
import traceback as tb
from typing import Any

from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.db import DataError, IntegrityError, InterfaceError, OperationalError
from django.db.models import ProtectedError
from django.http import Http404, JsonResponse
from django.utils.translation import gettext as _
from rest_framework import exceptions, permissions, status
from rest_framework.response import Response

from videos.storage import StorageUnavailable

logger = logging.getLogger(__name__)


class ApiError(exceptions.APIException):
    """A domain error with its envelope code; `param` names the offending field when there is one."""

    status_code = status.HTTP_400_BAD_REQUEST
    code = "BAD_PARAM"

    def __init__(self, desc: str, param: str = "") -> None:
        super().__init__(detail=desc)
        self.desc = desc
        self.param = param


class BadParam(ApiError):
    status_code = status.HTTP_400_BAD_REQUEST
    code = "BAD_PARAM"


class Conflict(ApiError):
    status_code = status.HTTP_409_CONFLICT
    code = "CONFLICT"


class NotFound(ApiError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "NOT_FOUND"


class Gone(ApiError):
    """410: the object was there and is no more (an export's file past its expiry)."""

    status_code = status.HTTP_410_GONE
    code = "GONE"


class PayloadTooLarge(ApiError):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    code = "PAYLOAD_TOO_LARGE"


class UnsupportedMediaType(ApiError):
    status_code = status.HTTP_415_UNSUPPORTED_MEDIA_TYPE
    code = "UNSUPPORTED_MEDIA_TYPE"


class ServiceUnavailable(ApiError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "SERVICE_UNAVAILABLE"


class TooManyRequests(ApiError):
    """429 with `Retry-After: wait` (whole seconds): the login throttle (videos.login_throttle)."""

    status_code = status.HTTP_429_TOO_MANY_REQUESTS
    code = "TOO_MANY_REQUESTS"

    def __init__(self, desc: str, wait: int) -> None:
        super().__init__(desc)
        self.wait = wait


_CODES_BY_STATUS = {
    400: "BAD_PARAM",
    401: "UNAUTHORIZED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    # Each status DRF can give has its own code: a client tells a wrong method from a wrong value by it.
    405: "METHOD_NOT_ALLOWED",
    406: "NOT_ACCEPTABLE",
    409: "CONFLICT",
    410: "GONE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    429: "TOO_MANY_REQUESTS",
    503: "SERVICE_UNAVAILABLE",
}


def error_body(code: str, desc: str, param: str = "", trace: str = "") -> dict[str, str]:
    return {"code": code, "desc": desc, "param": param, "traceback": trace if settings.DEBUG else ""}


def first_validation_error(detail: Any, path: tuple[str, ...] = ()) -> tuple[str, str]:
    """The dotted path and message of the first leaf of a DRF ValidationError detail."""
    if isinstance(detail, dict):
        for key, value in detail.items():
            sub_path = path if key in ("non_field_errors", "__all__") else (*path, str(key))
            return first_validation_error(value, sub_path)
    if isinstance(detail, list):
        for index, value in enumerate(detail):
            if isinstance(value, (dict, list)) and value:
                # A list of per-item errors (ListField) carries the index in the path.
                return first_validation_error(value, (*path, str(index)) if isinstance(value, dict) else path)
            return first_validation_error(value, path)
        return ".".join(path), ""
    return ".".join(path), str(detail)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, RequestDataTooBig):
        exc = PayloadTooLarge(
            _("The request body is larger than the limit of %(limit)d bytes.")
            % {"limit": settings.DATA_UPLOAD_MAX_MEMORY_SIZE}
        )
    elif isinstance(exc, (TooManyFieldsSent, TooManyFilesSent)):
        exc = BadParam(str(exc))
    elif isinstance(exc, RecursionError):
        # json.loads of a deeply nested body (or anything that walks it) runs out of stack: the client's fault.
        logger.warning("recursion limit hit in %s", context.get("view").__class__.__name__)
        exc = BadParam(_("The request is nested too deeply."))
    elif isinstance(exc, DjangoPermissionDenied):
        exc = exceptions.PermissionDenied()
    elif isinstance(exc, ProtectedError):
        exc = Conflict(_("The object is still in use by other objects and cannot be deleted."))
    elif isinstance(exc, IntegrityError):
        # A uniqueness race the serializer's check could not see (two creates at once): the client's conflict.
        exc = Conflict(_("The object conflicts with another one; reload and try again."))
    elif isinstance(exc, DataError):
        exc = BadParam(_("A value is out of range or malformed."))
    elif isinstance(exc, (OperationalError, InterfaceError)):
        logger.exception("database unavailable in %s", context.get("view").__class__.__name__)
        exc = ServiceUnavailable(_("The database is unavailable, try again later."))
    elif isinstance(exc, StorageUnavailable):
        logger.warning("file storage unavailable in %s: %s", context.get("view").__class__.__name__, exc)
        exc = ServiceUnavailable(_("The file storage is unavailable, try again later."))

    if not isinstance(exc, exceptions.APIException):
        return None

    headers: dict[str, str] = {}
    if getattr(exc, "auth_header", None):
        headers["WWW-Authenticate"] = exc.auth_header
    if getattr(exc, "wait", None):
        headers["Retry-After"] = str(int(exc.wait))

    if isinstance(exc, ApiError):
        code, desc, param = exc.code, exc.desc, exc.param
    elif isinstance(exc, exceptions.ValidationError):
        param, desc = first_validation_error(exc.detail)
        code = "BAD_PARAM"
    else:
        code = _CODES_BY_STATUS.get(exc.status_code, "BAD_PARAM" if exc.status_code < 500 else "INTERNAL")
        desc, param = str(exc.detail), ""
        if isinstance(exc, exceptions.MethodNotAllowed):
            desc = _("Method %(method)s is not allowed here; allowed: %(allowed)s.") % {
                "method": context["request"].method, "allowed": ", ".join(context["view"].allowed_methods)}
        elif isinstance(exc, exceptions.NotAcceptable):
            desc = _("No response type named in the Accept header can be given here; this endpoint answers with "
                     "%(types)s.") % {"types": ", ".join(_renderer_types(context["view"]))}
    trace = "".join(tb.format_exception(exc)) if settings.DEBUG else ""
    return Response(error_body(code, desc, param, trace), status=exc.status_code, headers=headers)


def _renderer_types(view: Any) -> list[str]:
    """The media types a view can answer with (an image endpoint's errors are JSON, its pictures JPEG or PNG)."""
    types = [renderer.media_type for renderer in view.get_renderers()] if view is not None else []
    return ["image/jpeg", "image/png"] if "image/*" in types else types or ["application/json"]


def json_error_view(status_code: int, code: str, desc: str) -> JsonResponse:
    return JsonResponse(error_body(code, desc), status=status_code, json_dumps_params={"ensure_ascii": False})


# --- OpenAPI: the envelope and the errors each operation can answer

ERROR_CODES = [
    "BAD_PARAM", "UNAUTHORIZED", "PERMISSION_DENIED", "NOT_FOUND", "CONFLICT", "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE", "SERVICE_UNAVAILABLE", "METHOD_NOT_ALLOWED", "NOT_ACCEPTABLE", "TOO_MANY_REQUESTS",
    "GONE",
]
ERROR_SCHEMA = {
    "type": "object",
    "description": "The one error format of the API.",
    "properties": {
        "code": {"type": "string", "enum": ERROR_CODES},
        "desc": {"type": "string", "description": "Human-readable text in the request's language."},
        "param": {"type": "string", "description": "The offending field or query parameter (dotted), or empty."},
        "traceback": {"type": "string", "description": "Empty unless the server runs with DEBUG."},
    },
    "required": ["code", "desc", "param", "traceback"],
    "additionalProperties": False,
}
_ERROR_DESCRIPTIONS = {
    400: "BAD_PARAM: a malformed or invalid parameter, field or body.",
    401: "UNAUTHORIZED: no, an invalid, expired or revoked credential.",
    403: "PERMISSION_DENIED: the user lacks the model permission.",
    404: "NOT_FOUND: no such object.",
    409: "CONFLICT: the object's state does not allow this, or it is still in use.",
    410: "GONE: the object's file has expired and was deleted.",
    413: "PAYLOAD_TOO_LARGE: the request body is over the limit.",
    415: "UNSUPPORTED_MEDIA_TYPE: the body's Content-Type is not accepted.",
    429: "TOO_MANY_REQUESTS: too many failed logins from this address or for this user; see Retry-After.",
    503: "SERVICE_UNAVAILABLE: the database or the broker is unavailable.",
}
_CODE_OF_STATUS = {
    400: "BAD_PARAM", 401: "UNAUTHORIZED", 403: "PERMISSION_DENIED", 404: "NOT_FOUND", 409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE", 503: "SERVICE_UNAVAILABLE",
    429: "TOO_MANY_REQUESTS", 410: "GONE",
}


def endpoint_views(generator: Any) -> dict[tuple[str, str], Any]:
    """{(schema path, lower-case method): view instance} of a drf-spectacular generator's endpoints."""
    views = {}
    for path, _regex, method, callback in getattr(generator, "endpoints", None) or []:
        view = generator.create_view(callback, method)
        views[(generator.coerce_path(path, method, view), method.lower())] = view
    return views


def _may_deny(view: Any) -> bool:
    """Whether the view's permission classes can refuse an authenticated user (403)."""
    if view is None:
        return True
    lenient = (permissions.IsAuthenticated, permissions.AllowAny)
    return not all(issubclass(cls, lenient) for cls in getattr(view, "permission_classes", []))


def _operation_errors(method: str, operation: dict[str, Any], view: Any) -> set[int]:
    """The error statuses `exception_handler` can give this operation, read from what the operation takes."""
    schemes = {name for requirement in operation.get("security") or [] for name in requirement}
    has_path_params = any(param.get("in") == "path" for param in operation.get("parameters", []))
    has_body = "requestBody" in operation
    # 400: invalid bodies and query parameters (unknown ones included); 503: database down, anywhere.
    errors = {400, 503}
    if schemes:
        errors.add(401)
        if _may_deny(view):
            errors.add(403)
    if has_path_params:
        errors.add(404)
    if method in ("post", "put", "patch", "delete") and (has_path_params or has_body) and "basicAuth" not in schemes:
        errors.add(409)  # an object still in use, a uniqueness race or a state that forbids the change
    if has_body:
        errors |= {413, 415}
    if "basicAuth" in schemes:
        errors.add(429)  # the login throttle
    return errors


def postprocess_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool,
                                **kwargs: Any) -> dict[str, Any]:
    """drf-spectacular hook: every operation documents its error responses, all in the envelope.

    Error responses a view declares itself (e.g. 409 of process/) keep their description and get the body.
    """
    result.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR_SCHEMA
    views = endpoint_views(generator)
    for path, path_item in result.get("paths", {}).items():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            responses = operation["responses"]
            for status_code in _operation_errors(method, operation, views.get((path, method))):
                responses.setdefault(str(status_code), {"description": _ERROR_DESCRIPTIONS[status_code]})
            for status_key, response in responses.items():
                if not status_key.isdigit() or int(status_key) < 400:
                    continue
                code = _CODE_OF_STATUS.get(int(status_key))
                schema: dict[str, Any] = {"$ref": "#/components/schemas/Error"}
                if code is not None:
                    schema = {"allOf": [schema, {"type": "object", "properties": {"code": {"enum": [code]}}}]}
                response["content"] = {"application/json": {"schema": schema}}
            operation["responses"] = dict(sorted(responses.items()))
    return result
