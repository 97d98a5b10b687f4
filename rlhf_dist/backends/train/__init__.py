"""Training engines behind one interface (TrainEngine): DeepSpeed ZeRO, or plain torch."""

from rlhf_dist.backends.train.base import StepInfo, TrainEngine, accumulation_steps, build_optimizer, build_scheduler
from rlhf_dist.backends.train.deepspeed_engine import (  # imports deepspeed lazily, on first use
    DeepSpeedEngine,
    deepspeed_config,
    single_process_deepspeed_engine,
)
from rlhf_dist.backends.train.dist import init_distributed
from rlhf_dist.backends.train.torch_engine import TorchEngine

__all__ = [
    "DeepSpeedEngine",
    "StepInfo",
    "TorchEngine",
    "TrainEngine",
    "accumulation_steps",
    "build_optimizer",
    "build_scheduler",
    "deepspeed_config",
    "init_distributed",
    "single_process_deepspeed_engine",
]
