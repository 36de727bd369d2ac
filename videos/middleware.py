"""Request latency for Prometheus (videos.metrics), labelled by the URL pattern a request matched."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from videos.metrics import request_observed


class RequestMetricsMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        # Django turns exceptions into responses inside get_response, so there always is a status.
        response = self.get_response(request)
        request_observed(request.method or "", request.path, getattr(request, "resolver_match", None),
                         response.status_code, time.perf_counter() - started)
        return response
