"""Offline preparation of model files (no Django, no torch at runtime)."""
