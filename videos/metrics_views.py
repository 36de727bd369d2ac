"""GET /metrics: Prometheus' text format, for the addresses in FFV_METRICS_ALLOWED_IPS or a staff user's token.

Refusals are in the API's error envelope: 401 without (or with a bad) token from another address, 403 for a
token of a user who is not staff. The scrape itself never fails for a database or broker outage: those show as
`ffv_metrics_source_up{source=...} 0`.
"""

from __future__ import annotations

import logging
from ipaddress import ip_address

from django.conf import settings
from django.http import HttpResponse
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy
from drf_spectacular.utils import extend_schema
from prometheus_client.exposition import choose_encoder
from rest_framework.negotiation import BaseContentNegotiation
from rest_framework.permissions import BasePermission
from rest_framework.views import APIView

from videos.errors import ServiceUnavailable
from videos.metrics import scrape_registry

logger = logging.getLogger(__name__)


def allowed_address(remote_addr: str) -> bool:
    """Whether the TCP peer is in FFV_METRICS_ALLOWED_IPS (an IPv4-mapped IPv6 peer counts as its IPv4)."""
    try:
        address = ip_address(remote_addr)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)
    candidates = [address] + ([mapped] if mapped is not None else [])
    return any(candidate in network for network in settings.FFV_METRICS_ALLOWED_IPS for candidate in candidates
               if candidate.version == network.version)


class MetricsAccess(BasePermission):
    message = gettext_lazy("Metrics are for the monitoring system's addresses and for staff users.")

    def has_permission(self, request, view) -> bool:
        if allowed_address(request.META.get("REMOTE_ADDR", "")):
            return True
        user = request.user
        return bool(user and user.is_authenticated and user.is_staff)


class IgnoreAccept(BaseContentNegotiation):
    """The body's format follows Prometheus' Accept below; errors are JSON whatever a scraper accepts."""

    def select_parser(self, request, parsers):
        return parsers[0] if parsers else None

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


@extend_schema(exclude=True)  # not JSON: Prometheus' exposition format (README "Metrics")
class MetricsView(APIView):
    permission_classes = [MetricsAccess]
    content_negotiation_class = IgnoreAccept

    def get(self, request) -> HttpResponse:
        # Only the media type is passed on: prometheus-client raises on a malformed version parameter and echoes
        # a well-formed one into Content-Type.
        openmetrics = "application/openmetrics-text" in request.META.get("HTTP_ACCEPT", "").lower()
        encoder, content_type = choose_encoder("application/openmetrics-text" if openmetrics else "")
        try:
            body = encoder(scrape_registry())
        except (OSError, ValueError) as exc:  # a damaged file in the multiprocess folder
            logger.exception("metrics: cannot read %s", settings.FFV_METRICS_MULTIPROC_DIR)
            raise ServiceUnavailable(_("Metrics cannot be read, try again later.")) from exc
        return HttpResponse(body, content_type=content_type)
