"""Shared test settings: hypothesis profiles sized for the 2-core CI machine."""

import os

from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    deadline=None,
    max_examples=int(os.environ.get("TRADINGD_HYPOTHESIS_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("soak", deadline=None, max_examples=5000)
settings.load_profile(os.environ.get("TRADINGD_HYPOTHESIS_PROFILE", "ci"))
