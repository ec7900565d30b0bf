"""The profiling engine: one forward pass, counted at the operator level, per module."""

from .profile import LayerStats, Profile
from .run import build_model, profile

__all__ = ["LayerStats", "Profile", "build_model", "profile"]
