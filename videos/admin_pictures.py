"""Pictures in the Django admin: a staff-only view that serves a row's image files, and the HTML that shows them.

Media files are never public (no MEDIA_URL route is served): a ModelAdmin with `PicturesAdminMixin` gets
`<id>/picture/<field>/`, behind the admin's login (staff only) and the model's view permission, which opens the
file from storage. `thumbnail_html` and `thumbnails_html` render `<img>` tags pointing at it, for list columns,
read-only fields and inline-like galleries; any model with picture FileFields can use them (events today; card
photos and the like the same way).
"""

from __future__ import annotations

import mimetypes
from collections.abc import Iterable

from django.contrib.admin.utils import unquote
from django.core.files.storage import default_storage
from django.db import models
from django.http import FileResponse, Http404, HttpRequest
from django.urls import NoReverseMatch, path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.translation import gettext as _

# Only these are served; anything else in a picture field is a 404 rather than content the browser would sniff.
PICTURE_TYPES = {"image/jpeg", "image/png", "image/webp"}
THUMBNAIL_SIZE = 96


class PicturesAdminMixin:
    """Adds `<id>/picture/<field>/` to a ModelAdmin: the file of one of `picture_fields` of that row."""

    picture_fields: tuple[str, ...] = ()

    def get_urls(self):
        opts = self.model._meta
        urls = [
            path("<path:object_id>/picture/<str:field>/", self.admin_site.admin_view(self.picture_view, cacheable=True),
                 name=f"{opts.app_label}_{opts.model_name}_picture"),
        ]
        return urls + super().get_urls()

    def picture_view(self, request: HttpRequest, object_id: str, field: str) -> FileResponse:
        if field not in self.picture_fields:
            raise Http404(_("No such picture."))
        obj = self.get_object(request, unquote(object_id))  # None for an id that is no row or not even a number
        if obj is None or not self.has_view_or_change_permission(request, obj):
            # The same answer for a row that does not exist and one the user may not see.
            raise Http404(_("No such picture."))
        name = getattr(obj, field).name
        content_type = mimetypes.guess_type(name)[0] if name else None
        if content_type not in PICTURE_TYPES:
            raise Http404(_("No such picture."))
        try:
            handle = default_storage.open(name, "rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise Http404(_("The picture file is missing.")) from None
        response = FileResponse(handle, content_type=content_type)
        response["Cache-Control"] = "private, max-age=3600"
        response["X-Content-Type-Options"] = "nosniff"
        return response


def picture_url(obj: models.Model, field: str) -> str:
    """The admin URL of `obj`'s picture in `field` ("" when it has none or its admin has no picture view)."""
    if not getattr(obj, field):
        return ""
    opts = obj._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_picture", args=[obj.pk, field])
    except NoReverseMatch:
        return ""


def change_url(obj: models.Model) -> str:
    opts = obj._meta
    try:
        return reverse(f"admin:{opts.app_label}_{opts.model_name}_change", args=[obj.pk])
    except NoReverseMatch:
        return ""


def thumbnail_html(obj: models.Model | None, field: str = "thumbnail", *, size: int = THUMBNAIL_SIZE,
                   link: bool = False) -> str:
    """An `<img>` of obj's picture at most `size` pixels high, linked to its change page if `link`; "-" if none."""
    url = picture_url(obj, field) if obj is not None else ""
    if not url:
        return "-"
    image = format_html('<img src="{}" alt="{}" class="ffv-picture" loading="lazy" '
                        'style="max-height:{}px;max-width:{}px">', url, str(obj), size, size * 2)
    target = change_url(obj) if link else ""
    return format_html('<a href="{}">{}</a>', target, image) if target else image


def thumbnails_html(objs: Iterable[models.Model], field: str = "thumbnail", *, size: int = THUMBNAIL_SIZE) -> str:
    """A wrapping gallery of thumbnails, each linked to its row's change page."""
    items = [(thumbnail_html(obj, field, size=size, link=True),) for obj in objs]
    if not items:
        return "-"
    return format_html('<div class="ffv-gallery" style="display:flex;flex-wrap:wrap;gap:4px">{}</div>',
                       format_html_join("", "{}", items))
