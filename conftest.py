"""Repository-level pytest configuration: hypothesis profiles for development and CI.

``HYPOTHESIS_PROFILE=ci`` (set by ``.ci/run``) derandomizes property tests and keeps no example
database; ``dev`` is the default.
"""

from __future__ import annotations

import os

from hypothesis import settings

from pytest_rknn.variants.strategies import register_profiles

register_profiles()
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))
