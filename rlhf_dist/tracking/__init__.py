"""Metrics sinks and timing."""

from rlhf_dist.tracking.metrics import MetricsLogger, read_metrics

__all__ = ["MetricsLogger", "read_metrics"]
