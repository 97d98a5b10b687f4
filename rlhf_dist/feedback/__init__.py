"""Human (or simulated) A/B feedback: a durable SQLite store and a simulated annotator."""

from rlhf_dist.feedback.simulated import SimulatedAnnotator
from rlhf_dist.feedback.store import FeedbackStore

__all__ = ["FeedbackStore", "SimulatedAnnotator"]
