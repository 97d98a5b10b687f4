"""rlhf-dist: distributed RLHF (SFT, Bradley-Terry reward model, PPO) on Ray, vLLM and DeepSpeed."""

__version__ = "0.1.0"
