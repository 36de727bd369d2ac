"""Loaded first by pytest (`-p tests.dev_mode` in pyproject.toml), before pytest-django reads the settings.

A test run is development: the settings' built-in secret key is allowed (FFV_DEV=1), for this process and the
servers and workers it starts. A key or FFV_DEV=0 already in the environment wins.
"""

import os

os.environ.setdefault("FFV_DEV", "1")
