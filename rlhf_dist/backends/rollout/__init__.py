"""Rollout engines behind one interface (RolloutEngine): vLLM (CPU or CUDA), or transformers generate.

Importing this package does not import vLLM; `build_rollout_engine(..., cfg.backend='vllm')` does.
"""

from rlhf_dist.backends.rollout.base import RolloutEngine, RolloutSample, build_rollout_engine

__all__ = ["RolloutEngine", "RolloutSample", "build_rollout_engine"]
