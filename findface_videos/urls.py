from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView
from rest_framework.permissions import AllowAny
from rest_framework.routers import DefaultRouter

from videos import views
from videos.auth_views import LoginView, LogoutView

router = DefaultRouter(trailing_slash=True)
router.include_root_view = False
router.register("videos", views.VideoArchiveViewSet, basename="videoarchive")
router.register("camera-groups", views.CameraGroupViewSet, basename="cameragroup")
router.register("cameras", views.CameraViewSet, basename="camera")

urlpatterns = [
    path("admin/", admin.site.urls),
    path("auth/login/", LoginView.as_view(), name="auth-login"),
    path("auth/logout/", LogoutView.as_view(), name="auth-logout"),
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
