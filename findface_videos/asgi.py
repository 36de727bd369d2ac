"""The application gunicorn serves (findface_videos/gunicorn_conf.py): Django's WSGI application behind the bridge
of findface_videos.serving, which reads requests in an event loop and runs Django in a thread pool."""

from django.urls import get_resolver

from findface_videos.serving import WSGIBridge
from findface_videos.wsgi import application as wsgi_application

# The URLconf imports the views (DRF, PyAV, OpenCV: most of a second) as each worker starts, not in the first
# request each worker serves.
_ = get_resolver().url_patterns

application = WSGIBridge(wsgi_application)
