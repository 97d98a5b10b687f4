"""rlhf-dist: distributed RLHF (SFT, Bradley-Terry reward model, PPO) on Ray, vLLM and DeepSpeed."""

__version__ = "0.1.0"
__all__ = ["RLHFPipeline", "__version__"]


def __getattr__(name: str):
    # Lazy: `import rlhf_dist` stays light (no torch/ray) until the API is used.
    if name == "RLHFPipeline":
        from rlhf_dist.api import RLHFPipeline

        return RLHFPipeline
    raise AttributeError(name)
