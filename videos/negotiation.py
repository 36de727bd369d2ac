"""Content negotiation: credentials before `Accept`, and image endpoints that take `Accept: image/*`.

DRF negotiates the response type before it authenticates, so a client without a token that asks for an image got
406 instead of 401. Here a 406 is only given to a client that may use the endpoint.
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import NotAcceptable
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.response import Response


class AuthFirstContentNegotiation(DefaultContentNegotiation):
    """DRF's negotiation, except that authentication and permission errors (401/403) win over a 406."""

    def select_renderer(self, request, renderers, format_suffix=None):
        try:
            return super().select_renderer(request, renderers, format_suffix)
        except NotAcceptable:
            view = (getattr(request, "parser_context", None) or {}).get("view")
            if view is not None:
                view.perform_authentication(request)
                view.check_permissions(request)
            raise


class ImageRenderer(BaseRenderer):
    """Declares that an endpoint answers `Accept: image/*`, `image/jpeg`, `image/png`.

    Its views return the image bytes themselves (HttpResponse, FileResponse) with the picture's own Content-Type,
    so this renders nothing: error bodies are JSON (ImageEndpointMixin).
    """

    media_type = "image/*"
    format = "image"

    def render(self, data: Any, accepted_media_type: str | None = None, renderer_context: Any = None) -> bytes:
        return JSONRenderer().render(data, JSONRenderer.media_type, renderer_context)


# The renderer classes of an action that answers with an image: JSON first, so `*/*` and no Accept pick it for errors.
IMAGE_RENDERERS = [JSONRenderer, ImageRenderer]


class ImageEndpointMixin:
    """For viewsets with image actions (renderer_classes=IMAGE_RENDERERS): their errors stay in the JSON envelope,
    whatever image type the client accepted."""

    def finalize_response(self, request, response, *args, **kwargs):
        if isinstance(response, Response) and isinstance(getattr(request, "accepted_renderer", None), ImageRenderer):
            request.accepted_renderer, request.accepted_media_type = JSONRenderer(), JSONRenderer.media_type
        return super().finalize_response(request, response, *args, **kwargs)
