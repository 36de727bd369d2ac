"""`POST /auth/login/` (HTTP Basic credentials, body {"uuid": ...}) and `POST /auth/logout/`."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.utils import extend_schema
from rest_framework import authentication, serializers, status
from rest_framework.permissions import IsAuthenticated
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from videos.auth import ExpiringTokenAuthentication
from videos.login_throttle import client_address, login_attempt_begin, login_attempt_succeeded
from videos.serializers.fields import ExcessFieldsRejectMixin, StrictCharField
from videos.tokens import token_create, token_revoke


class LoginSerializer(ExcessFieldsRejectMixin, serializers.Serializer):
    uuid = StrictCharField(min_length=1, max_length=256)


class UserSerializer(serializers.ModelSerializer):
    class Meta:
        model = get_user_model()
        fields = ["id", "username", "first_name", "last_name", "email", "is_active", "is_staff"]


class LoginResponseSerializer(serializers.Serializer):
    token = serializers.CharField()
    user = UserSerializer()
    token_expiration_datetime = serializers.DateTimeField()


class BasicAuthentication(authentication.BasicAuthentication):
    www_authenticate_realm = "findface-videos"

    def authenticate_credentials(self, userid, password, request=None):
        # Throttled before the password is hashed: a throttled guess costs no hash and gets 429 even when right.
        attempt = login_attempt_begin(username=userid, address=client_address(request))
        result = super().authenticate_credentials(userid, password, request)  # a 401 stays counted as a failure
        login_attempt_succeeded(attempt)
        return result


class BasicScheme(OpenApiAuthenticationExtension):
    """Documents the HTTP Basic credentials of `POST /auth/login/` in the OpenAPI schema."""

    target_class = "videos.auth_views.BasicAuthentication"
    name = "basicAuth"

    def get_security_definition(self, auto_schema):
        return {"type": "http", "scheme": "basic"}


class LoginView(APIView):
    authentication_classes = [BasicAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=LoginSerializer, responses={200: LoginResponseSerializer})
    def post(self, request: Request) -> Response:
        serializer = LoginSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        token = token_create(user=request.user, device_uuid=serializer.validated_data["uuid"])
        return Response(
            LoginResponseSerializer(
                {"token": token.key, "user": request.user, "token_expiration_datetime": token.expires_at}
            ).data
        )


class LogoutView(APIView):
    authentication_classes = [ExpiringTokenAuthentication]
    permission_classes = [IsAuthenticated]

    @extend_schema(request=None, responses={204: None})
    def post(self, request: Request) -> Response:
        token_revoke(token=request.auth)
        return Response(status=status.HTTP_204_NO_CONTENT)


__all__ = ["LoginView", "LogoutView", "token_create"]
