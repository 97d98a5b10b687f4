"""The one typed config schema of rlhf-dist, YAML loading and dotted overrides."""

from rlhf_dist.config.loading import (
    ConfigError, apply_overrides, build_config, config_to_yaml, load_config, read_yaml, with_overrides,
)
from rlhf_dist.config.schema import (
    CheckpointConfig,
    ClusterConfig,
    EvalConfig,
    KLConfig,
    PPOConfig,
    RewardSource,
    RLHFConfig,
    ActorResources,
    RoleResources,
    RunConfig,
    TrackingConfig,
)
from rlhf_dist.config.schema_parts import (
    CriticConfig,
    DataConfig,
    LoRAConfig,
    ModelConfig,
    RewardModelConfig,
    RolloutConfig,
    SamplingConfig,
    TrainConfig,
)

__all__ = [
    "ActorResources", "CheckpointConfig", "ClusterConfig", "ConfigError", "CriticConfig", "DataConfig", "EvalConfig",
    "KLConfig", "LoRAConfig", "ModelConfig", "PPOConfig", "RLHFConfig", "RewardModelConfig", "RewardSource",
    "RoleResources", "RolloutConfig", "RunConfig", "SamplingConfig", "TrackingConfig", "TrainConfig", "apply_overrides",
    "build_config", "config_to_yaml", "load_config", "read_yaml", "with_overrides",
]
