from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.routers import DefaultRouter

from videos import event_views, export_views, views, watchlist_views, webhook_views
from videos.auth_views import LoginView, LogoutView
from videos.detect_views import DetectView
from videos.metrics_views import MetricsView

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
# No `.json` suffix aliases: `format` is not a renderer switch here (URL_FORMAT_OVERRIDE), and actions take no
# `format` argument (`/videos/count.json/` was a 500).
router.include_format_suffixes = False
router.register("videos", views.VideoArchiveViewSet, basename="videoarchive")
router.register("camera-groups", views.CameraGroupViewSet, basename="cameragroup")
router.register("cameras", views.CameraViewSet, basename="camera")
router.register("webhooks", webhook_views.WebhookViewSet, basename="webhook")
for _kind, _plural in event_views.PLURAL.items():
    router.register(f"events/{_plural}", event_views.EVENT_VIEWSETS[_kind], basename=f"{_kind}event")
    router.register(f"clusters/{_plural}", event_views.CLUSTER_VIEWSETS[_kind], basename=f"{_kind}cluster")

router.register("exports", export_views.ExportViewSet, basename="export")
router.register("watch-lists", watchlist_views.WatchListViewSet, basename="watchlist")
router.register("cards", watchlist_views.CardViewSet, basename="card")
router.register("card-photos", watchlist_views.CardPhotoViewSet, basename="cardphoto")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/login/", LoginView.as_view(), name="auth-login"),
    path("auth/logout/", LogoutView.as_view(), name="auth-logout"),
    path("detect/", DetectView.as_view(), name="detect"),
    # Prometheus' default path, without a trailing slash (README "Metrics").
    path("metrics", MetricsView.as_view(), name="metrics"),
    # Public, like the page it documents; no authentication so a stale token cannot turn it into a 401.
    path("api/schema/", SpectacularAPIView.as_view(authentication_classes=[], permission_classes=[AllowAny]),
         name="schema"),
    path("api/docs/", SpectacularSwaggerView.as_view(url_name="schema", authentication_classes=[],
                                                     permission_classes=[AllowAny]), name="swagger-ui"),
    path("", include(router.urls)),
]

handler400 = "videos.error_views.bad_request"
handler403 = "videos.error_views.permission_denied"
handler404 = "videos.error_views.not_found"
handler500 = "videos.error_views.server_error"
