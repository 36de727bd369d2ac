"""Who may call what: an authentication and permission matrix generated from the URL conf.

Every route of the API (router viewsets with their actions, plain API views, format-suffix variants too) is
found by walking `django.urls.get_resolver()`, so routes added later are covered without editing this file;
only login and the schema/docs pages (public by design) and the Django admin (its own session login) are exempt.
Each route and method is called by:

- nobody (no credentials), a made-up token, an expired token, a revoked token, a deactivated user's token: 401;
- a user without any permission, and a user with every permission of the app except the ones the route needs:
  403 (even for an object that does not exist, so a denial never tells what exists), and nothing changes;
- a user with only view permissions: works for reads, 403 for writes;
- a user with exactly the permissions the route needs, and a user with all of them: works, meaning a 2xx or a
  non-auth 4xx (a body `{}` is often a BAD_PARAM), never 401/403.

Every error is in the envelope (tests/errors.py), so a denied picture route, say, never sends image bytes.
Path parameters name real objects, built for the view's model from the model's fields (new models too);
`test_every_route_builds_a_request` fails for a route the generator cannot build a request for.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import cv2
import numpy as np
import pytest
from django.contrib.auth.models import Permission, User
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage
from django.db import models
from django.urls import URLPattern, URLResolver, get_resolver, resolve
from django.utils import timezone
from rest_framework.permissions import AllowAny, DjangoModelPermissions, IsAuthenticated
from rest_framework.test import APIClient

from tests.conftest import _user
from tests.errors import assert_error
from videos.auth_views import token_create
from videos.models import AuthToken

APP_LABEL = "videos"
# Public by design (tests/test_schema.py, tests/api/test_auth.py cover them), by URL name.
EXEMPT_NAMES = {"auth-login", "schema", "swagger-ui"}
# /metrics: staff tokens or listed addresses, not model permissions (tests/test_metrics.py covers who gets in).
EXEMPT_NAMES |= {"metrics"}
# The Django admin has its own session login and redirects to it: not part of the token API.
EXEMPT_NAMESPACES = {"admin"}
METHODS = ("get", "post", "put", "patch", "delete")
WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}
# Values for path parameters that do not name an object.
PATH_CONSTANTS = {"format": "json"}
MISSING_ID = "987654321"


class Unbuildable(Exception):
    """The generator cannot build a request for a route; the route must not silently drop out of the matrix."""


# --- routes, from the URL conf


@dataclass(frozen=True)
class Route:
    pattern: str  # the full regex or route string, as Django joins it
    name: str | None
    callback: Callable
    view: type | None
    method: str  # upper case
    action: str | None
    initkwargs: tuple[tuple[str, Any], ...]

    @property
    def display(self) -> str:
        """`/videos/{pk}/process/`, `/videos/{pk}/process.{format}`: the route as a readable path."""
        path = self.pattern.lstrip("^").rstrip("$")
        path = re.sub(r"\(\?P<(\w+)>[^()]*\)", r"{\1}", path)
        path = re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", path)
        return "/" + path.replace("\\.", ".").replace("/?", "")

    @property
    def params(self) -> list[str]:
        return re.findall(r"\(\?P<(\w+)>", self.pattern) + re.findall(r"<(?:\w+:)?(\w+)>", self.pattern)

    @property
    def is_format_variant(self) -> bool:
        return "format" in self.params

    @property
    def takes_object(self) -> bool:
        return any(param not in PATH_CONSTANTS for param in self.params)

    def __str__(self) -> str:
        return f"{self.method} {self.display}"


def _walk(patterns: list, prefix: str = "", namespace: str | None = None) -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            inner = entry.namespace or namespace
            if inner in EXEMPT_NAMESPACES:
                continue
            yield from _walk(entry.url_patterns, prefix + _pattern_text(entry.pattern), inner)
        else:
            yield prefix + _pattern_text(entry.pattern), entry


def _pattern_text(pattern: Any) -> str:
    text = str(pattern)
    # Joined regexes: only the outermost `^` and `$` matter; an included router's `^` comes after the prefix.
    return text[1:] if text.startswith("^") else text


def _methods(callback: Callable, view: type | None) -> list[tuple[str, str | None]]:
    actions = getattr(callback, "actions", None)
    if actions:  # a router viewset: {"get": "list", "post": "create"}
        return [(method.upper(), action) for method, action in actions.items() if method in METHODS]
    if view is None:
        return [("GET", None)]  # a function view: at least GET, and it cannot be built (Unbuildable)
    allowed = [method for method in METHODS if hasattr(view, method)]
    return [(method.upper(), None) for method in allowed]


def all_routes() -> list[Route]:
    routes = []
    for pattern, entry in _walk(get_resolver().url_patterns):
        if entry.name in EXEMPT_NAMES:
            continue
        callback = entry.callback
        view = getattr(callback, "cls", None) or getattr(callback, "view_class", None)
        initkwargs = tuple(sorted((getattr(callback, "initkwargs", None) or {}).items(), key=lambda item: item[0]))
        for method, action in _methods(callback, view):
            routes.append(Route("^" + pattern.lstrip("^"), entry.name, callback, view, method, action, initkwargs))
    return routes


def api_routes() -> set[tuple[str, str]]:
    """(OpenAPI-style path, METHOD) of every non-exempt route, format-suffix variants left out."""
    return {
        (route.display.replace("{pk}", "{id}"), route.method) for route in all_routes() if not route.is_format_variant
    }


ROUTES = all_routes()


def route_for(path: str, method: str) -> Route:
    """The route that serves `method` on a concrete `path`."""
    match = resolve(path)
    for route in ROUTES:
        if route.callback is match.func and route.method == method:
            return route
    raise Unbuildable(f"{method} {path}: no such route")


# --- what a route needs


def _view_instance(route: Route) -> Any:
    if route.view is None:
        raise Unbuildable(f"{route}: a function view (no view class to read its model and permissions from)")
    view = route.view(**dict(route.initkwargs))
    view.action = route.action
    view.request = None
    view.args, view.kwargs, view.format_kwarg = (), {}, None
    return view


def route_model(route: Route) -> type[models.Model] | None:
    view = _view_instance(route)
    if not hasattr(view, "get_queryset"):
        return None
    try:
        return view.get_queryset().model
    except AssertionError:  # a generic view with neither queryset nor get_queryset()
        return None


def required_permissions(route: Route) -> list[str]:
    """Codenames the route needs, read from its permission classes.

    Model permissions: what the action declares (`@requires`), else the model permission of the method. Any
    other class that can refuse an authenticated user declares `required_perms` ("app_label.codename", as
    `@requires` does on actions); one that does not is a route the matrix cannot build (it fails, by name).
    """
    view = _view_instance(route)
    codenames: list[str] = []
    for cls in view.permission_classes:
        if issubclass(cls, (IsAuthenticated, AllowAny)):
            continue
        if issubclass(cls, DjangoModelPermissions):
            model = route_model(route)
            if model is None:
                raise Unbuildable(f"{route}: model permissions but no model")
            handler = getattr(view, route.action or route.method.lower(), None)
            templates = getattr(handler, "required_perms", None) or cls.perms_map[route.method]
            names = [template % {"app_label": model._meta.app_label, "model_name": model._meta.model_name}
                     for template in templates]
        else:
            names = getattr(cls, "required_perms", None)
            if names is None:
                raise Unbuildable(f"{route}: permission class {cls.__module__}.{cls.__qualname__} declares no "
                                  "`required_perms` (e.g. ['videos.view_faceevent']): which user must it refuse?")
        for name in names:
            app_label, _, codename = name.partition(".")
            if app_label != APP_LABEL:
                raise Unbuildable(f"{route}: needs {name}, outside the {APP_LABEL} app")
            codenames.append(codename)
    return codenames


# --- objects for path parameters, from the model's fields

_counter = itertools.count(1)


def _jpeg() -> bytes:
    ok, data = cv2.imencode(".jpg", np.full((8, 8, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


def make_instance(model: type[models.Model], cache: dict[type, models.Model]) -> models.Model:
    """A saved row of `model` with every required field filled by its type (related rows made the same way)."""
    if model in cache:
        return cache[model]
    values: dict[str, Any] = {}
    for field in model._meta.concrete_fields:
        if isinstance(field, models.AutoField) or getattr(field, "auto_now", False) or \
                getattr(field, "auto_now_add", False):
            continue
        if field.is_relation:
            if not field.null:
                values[field.name] = make_instance(field.related_model, cache)
            continue
        if (field.has_default() or field.null) and not field.primary_key:
            continue
        values[field.name] = _field_value(model, field)
    instance = model.objects.create(**values)
    cache[model] = instance
    return instance


def _field_value(model: type[models.Model], field: models.Field) -> Any:
    unique = f"matrix-{model._meta.model_name}-{next(_counter)}"
    if isinstance(field, models.FileField):
        return default_storage.save(f"matrix/{unique}.jpg", ContentFile(_jpeg()))
    if isinstance(field, models.BooleanField):
        return False
    if isinstance(field, (models.IntegerField, models.DecimalField)):
        return 1
    if isinstance(field, models.FloatField):
        return 0.5
    if isinstance(field, (models.CharField, models.TextField)):
        return unique[: field.max_length] if field.max_length else unique
    if isinstance(field, models.BinaryField):
        return bytes(4 * 512)
    if isinstance(field, models.JSONField):
        return {}
    if isinstance(field, models.DateTimeField):
        return timezone.now()
    if isinstance(field, models.DateField):
        return timezone.now().date()
    raise Unbuildable(f"{model.__name__}.{field.name}: no value for a {type(field).__name__}")


@dataclass
class Built:
    path: str
    target: models.Model | None


def build_request(route: Route, cache: dict[type, models.Model], *, missing: bool = False) -> Built:
    """The concrete path of `route`, naming a real object of the view's model (or a missing one)."""
    target = None
    kwargs: dict[str, str] = {}
    for param in route.params:
        if param in PATH_CONSTANTS:
            kwargs[param] = PATH_CONSTANTS[param]
            continue
        view = _view_instance(route)
        lookup = getattr(view, "lookup_url_kwarg", None) or getattr(view, "lookup_field", None)
        model = route_model(route)
        if param != lookup or model is None:
            raise Unbuildable(f"{route}: no value for path parameter {param!r}")
        target = make_instance(model, cache)
        kwargs[param] = MISSING_ID if missing else str(getattr(target, view.lookup_field))
    path = route.pattern.lstrip("^").rstrip("$")
    for param, value in kwargs.items():
        path = re.sub(rf"\(\?P<{param}>[^()]*\)|<(?:\w+:)?{param}>", value, path)
    path = "/" + path.replace("\\.", ".").replace("/?", "/")
    if re.search(r"[\\()\[\]?*+^$]", path):
        raise Unbuildable(f"{route}: {path!r} still has regex syntax")
    match = resolve(path)
    if match.func is not route.callback or {key: str(value) for key, value in match.kwargs.items()} != kwargs:
        raise Unbuildable(f"{route}: {path!r} resolves to {match.view_name} {match.kwargs}")
    return Built(path=path, target=target)


# --- who calls


def _all_codenames() -> list[str]:
    return list(Permission.objects.filter(content_type__app_label=APP_LABEL).values_list("codename", flat=True))


def _token(user: User, *, expired: bool = False, revoked: bool = False) -> str:
    token = token_create(user=user, device_uuid="auth-matrix")
    if expired:
        AuthToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    if revoked:
        AuthToken.objects.filter(pk=token.pk).update(revoked=True)
    return token.key


def _client(key: str | None) -> APIClient:
    client = APIClient()
    if key is not None:
        client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client


def _full_user() -> User:
    return _user("matrix-all", _all_codenames())


def _inactive_user() -> User:
    user = _full_user()
    user.is_active = False
    user.save(update_fields=["is_active"])
    return user


UNAUTHENTICATED = {
    "anonymous": lambda route: None,
    "made-up-token": lambda route: "0" * 64,
    "expired-token": lambda route: _token(_full_user(), expired=True),
    "revoked-token": lambda route: _token(_full_user(), revoked=True),
    "inactive-user": lambda route: _token(_inactive_user()),
}


def _without_permissions(route: Route) -> User:
    return _user("matrix-none")


def _all_but_required(route: Route) -> User:
    required = set(required_permissions(route))
    return _user("matrix-all-but", [codename for codename in _all_codenames() if codename not in required])


def _read_only(route: Route) -> User:
    return _user("matrix-viewer", [codename for codename in _all_codenames() if codename.startswith("view_")])


def _required_only(route: Route) -> User:
    return _user("matrix-required", required_permissions(route))


def _all_permissions(route: Route) -> User:
    return _full_user()


def _needs_write(route: Route) -> bool:
    return any(not codename.startswith("view_") for codename in required_permissions(route))


# name: (user factory, whether the route must refuse that user)
AUTHENTICATED: dict[str, tuple[Callable[[Route], User], Callable[[Route], bool]]] = {
    "no-permissions": (_without_permissions, lambda route: bool(required_permissions(route))),
    "all-but-required": (_all_but_required, lambda route: bool(required_permissions(route))),
    "read-only": (_read_only, _needs_write),
    "required-only": (_required_only, lambda route: False),
    "all-permissions": (_all_permissions, lambda route: False),
}
# Denials must not depend on whether the object exists (that would leak which ids exist).
MISSING_OBJECT_CASES = {"anonymous", "no-permissions"}

CASES = [
    pytest.param(route, case, missing, id=f"{route} [{case}{', missing object' if missing else ''}]")
    for route in ROUTES
    for case in [*UNAUTHENTICATED, *AUTHENTICATED]
    for missing in ((False, True) if case in MISSING_OBJECT_CASES and route.takes_object else (False,))
]


def _call(client: APIClient, route: Route, path: str):
    body = {"data": {}, "format": "json"} if route.method in {"POST", "PUT", "PATCH"} else {}
    return getattr(client, route.method.lower())(path, **body)


def _snapshot(target: models.Model | None) -> list[dict[str, Any]] | None:
    if target is None:
        return None
    return list(type(target).objects.filter(pk=target.pk).values())


@pytest.mark.parametrize("route, case, missing", CASES)
def test_auth_matrix(route: Route, case: str, missing: bool, db, media_root):
    cache: dict[type, models.Model] = {}
    built = build_request(route, cache, missing=missing)
    before = _snapshot(built.target)

    if case in UNAUTHENTICATED:
        response = _call(_client(UNAUTHENTICATED[case](route)), route, built.path)
        assert_error(response, 401, "UNAUTHORIZED")
        assert _snapshot(built.target) == before, "a refused request changed the object"
        return

    make_user, refused = AUTHENTICATED[case]
    response = _call(_client(_token(make_user(route))), route, built.path)
    if refused(route):
        assert_error(response, 403, "PERMISSION_DENIED")
        assert _snapshot(built.target) == before, "a refused request changed the object"
        return
    assert response.status_code not in (401, 403), (response.status_code, response.content[:500])
    assert response.status_code < 500, (response.status_code, response.content[:500])
    if response.status_code >= 400:
        assert_error(response, response.status_code, ERROR_CODES[response.status_code])


ERROR_CODES = {400: "BAD_PARAM", 404: "NOT_FOUND", 405: "BAD_PARAM", 409: "CONFLICT", 410: "GONE",
               413: "PAYLOAD_TOO_LARGE", 415: "UNSUPPORTED_MEDIA_TYPE"}


def test_every_route_builds_a_request(db, media_root):
    """A route the generator cannot build a request (or a permission expectation) for fails here, by name."""
    problems = []
    for route in ROUTES:
        try:
            build_request(route, {})
            required_permissions(route)
        except Unbuildable as exc:
            problems.append(str(exc))
    assert not problems, "\n".join(problems)


def test_the_generator_finds_the_api():
    """The walk over the URL conf sees the routes of the page (so an empty or broken walk cannot pass)."""
    found = {str(route) for route in ROUTES}
    for expected in ("GET /videos/", "POST /videos/", "GET /videos/{pk}/", "PATCH /videos/{pk}/",
                     "DELETE /videos/{pk}/", "POST /videos/{pk}/process/", "PUT /videos/{pk}/upload/source_file/",
                     "GET /videos/{pk}/screenshot/", "DELETE /videos/{pk}/file/", "GET /videos/count/",
                     "GET /camera-groups/", "DELETE /cameras/{pk}/", "POST /auth/logout/"):
        assert expected in found, sorted(found)
    assert not any(route.display.startswith(("/admin/", "/api/", "/auth/login/")) for route in ROUTES)


def test_no_format_suffix_aliases(anon_api, db):
    """`/videos.json` would be an undocumented alias whose actions fail on the `format` argument (a 500)."""
    assert not [str(route) for route in ROUTES if route.is_format_variant]
    assert_error(anon_api.get("/videos/count.json/"), 404, "NOT_FOUND")
