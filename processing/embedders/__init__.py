"""Appearance embedders: a unit vector per object crop, for deep_sort matching, clustering and search."""

from processing.embedders import facenet as _facenet  # noqa: F401  (registers "facenet")
from processing.embedders import mobilenet as _mobilenet  # noqa: F401  (registers "mobilenetv2")
from processing.embedders.base import Embedder, available_embedders, create_embedder, l2_normalise

__all__ = ["Embedder", "available_embedders", "create_embedder", "l2_normalise"]
