"""Human (and simulated) A/B feedback.

The feedback service (app, database, CLI), the seed API's store, and simulated annotators.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # at run time __getattr__ imports them: SQLAlchemy only when a command needs the database
    from rlhf_dist.feedback.simulated import SimulatedAnnotator
    from rlhf_dist.feedback.store import FeedbackStore

_HOME_OF = {"FeedbackStore": "store", "SimulatedAnnotator": "simulated"}

__all__ = ["FeedbackStore", "SimulatedAnnotator"]


def __getattr__(name: str) -> Any:
    if name not in _HOME_OF:
        raise AttributeError(f"module 'rlhf_dist.feedback' has no attribute {name!r}")
    return getattr(import_module(f"rlhf_dist.feedback.{_HOME_OF[name]}"), name)
