"""Human (and simulated) A/B feedback: the feedback service (app, database, CLI), the seed API's store, a simulated annotator."""

from rlhf_dist.feedback.simulated import SimulatedAnnotator
from rlhf_dist.feedback.store import FeedbackStore

__all__ = ["FeedbackStore", "SimulatedAnnotator"]
