"""Training engines behind one interface (TrainEngine): DeepSpeed ZeRO, or plain torch."""

from rlhf_dist.backends.train.base import StepInfo, TrainEngine, accumulation_steps, build_optimizer, build_scheduler
from rlhf_dist.backends.train.torch_engine import TorchEngine

__all__ = ["StepInfo", "TorchEngine", "TrainEngine", "accumulation_steps", "build_optimizer", "build_scheduler"]
