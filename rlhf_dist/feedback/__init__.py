"""Human (and simulated) A/B feedback.

The feedback service (app, database, CLI), the seed API's store, and simulated annotators.
"""

from rlhf_dist.feedback.simulated import SimulatedAnnotator
from rlhf_dist.feedback.store import FeedbackStore

__all__ = ["FeedbackStore", "SimulatedAnnotator"]
