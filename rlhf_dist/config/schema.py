"""The root config (RLHFConfig) and its cross-field rules.

Cross-field rules run at load time, so a bad config fails before any actor starts.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from rlhf_dist.algo.registry import ADVANTAGES, KL_ESTIMATORS, POLICY_LOSSES, Registry
from rlhf_dist.rewards import REWARD_SOURCES
from rlhf_dist.config.schema_feedback import FeedbackConfig
from rlhf_dist.config.schema_dpo import DPOStageConfig
from rlhf_dist.config.schema_parts import (
    CriticConfig,
    DataConfig,
    ModelConfig,
    PipelineConfig,
    RewardModelConfig,
    RolloutConfig,
    Strict,
    TrainConfig,
)


def _choices(registry: Registry[Any]) -> str:
    """The registered names with their properties and descriptions, for a field's description (the
    generated docs/config-reference.md lists every built-in this way)."""
    return (f"{registry.describe()}. Or a plugin: a function registered with @{registry.symbol}.register "
            f"({registry.home}), named 'module:function'.")


class ActorResources(Strict):
    """What each actor of a role reserves."""

    gpus_per_actor: float = Field(0.0, ge=0.0, le=64, description="GPUs reserved per actor (0 on CPU).")
    cpus_per_actor: float = Field(0.25, gt=0.0, le=1024, description="CPUs reserved per actor (fractions share cores).")
    torch_threads: int | None = Field(
        None, ge=1, le=1024, description="torch intra-op threads per actor. None: the whole CPUs of cpus_per_actor, "
        "at least 1. Raise it for a role that runs while the others wait (the rollout engine generates alone); "
        "roles that run at once on shared cores thrash with more threads than cores.")

    resources: dict[str, float] = Field(
        default_factory=dict, description="Custom Ray resources each actor's bundle also reserves, e.g. "
        "{train_node: 1} to place this role only on nodes started with `--resources '{\"train_node\": 8}'` "
        "(launch/start_worker.sh passes extra `ray start` arguments on). Empty: any node with the CPUs/GPUs.")

    @field_validator("resources")
    @classmethod
    def _custom_resources(cls, value: dict[str, float]) -> dict[str, float]:
        for name, amount in value.items():
            if not name or name in ("CPU", "GPU", "memory", "object_store_memory"):
                raise ValueError(f"resource name {name!r}: use cpus_per_actor / gpus_per_actor for CPU and GPU; "
                                 "custom names only")
            if not amount > 0:
                raise ValueError(f"resource {name!r}: amount must be > 0, got {amount}")
        return value

    def threads(self) -> int:
        """torch threads an actor of this role uses."""
        return self.torch_threads if self.torch_threads is not None else max(1, int(self.cpus_per_actor))


class RoleResources(ActorResources):
    num_actors: int = Field(1, ge=1, le=65_536, description="Ray actors (ranks) for this role.")


class ClusterConfig(Strict):
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where models run.")
    address: str | None = Field(
        None, description="Ray cluster address ('auto' inside a job); None starts a private local cluster."
    )
    local_num_cpus: int | None = Field(None, ge=1, description="CPUs the local cluster offers (None = all).")
    colocate: bool = Field(
        False, description="Place all roles in one placement group sharing devices (vs one group per role)."
    )
    policy: RoleResources = Field(
        default_factory=RoleResources, description="The policy's data-parallel training group."
    )
    critic: RoleResources = Field(default_factory=RoleResources, description="The critic's training group (only "
                                  "with a ppo.advantage that needs a critic, e.g. 'gae').")
    reference: RoleResources = Field(default_factory=RoleResources, description="Frozen reference (KL penalty) group.")
    reward: RoleResources = Field(
        default_factory=RoleResources, description="Reward-model scoring actors (a 'model' reward source only)."
    )
    rollout: ActorResources = Field(
        default_factory=ActorResources,
        description="Each rollout engine's actor; how many there are is rollout.num_engines.")
    dead_actor_timeout_s: float = Field(900.0, gt=0, description="A remote call slower than this is a dead actor.")
    placement_timeout_s: float = Field(
        120.0, gt=0, description="How long to wait for Ray to reserve the placement groups before failing "
        "(a cluster that lacks the resources never schedules them).")


class KLConfig(Strict):
    estimator: str = Field(
        "k1", description="Per-token KL estimator in the reward penalty (J. Schulman, 'Approximating KL Divergence'"
        ", log_ratio = log pi - log pi_ref): " + _choices(KL_ESTIMATORS))
    controller: Literal["fixed", "adaptive"] = Field(
        "fixed", description="Fixed coefficient or Ziegler's adaptive one."
    )
    coef: float = Field(0.05, ge=0.0, le=100.0, description="(Initial) KL penalty coefficient.")
    target: float | None = Field(None, gt=0.0, description="Adaptive controller: target KL per sequence.")
    horizon: int = Field(10_000, ge=1, description="Adaptive controller: horizon in samples.")

    @field_validator("estimator")
    @classmethod
    def _known_estimator(cls, value: str) -> str:
        return KL_ESTIMATORS.check(value)  # ValueError naming the registered ones


class RewardSource(Strict):
    kind: str = Field("model", description="Where the score comes from: " + _choices(REWARD_SOURCES))
    weight: float = Field(1.0, description="Weight of this source in the summed reward.")
    function: str | None = Field(None, description="'module:callable' taking (prompts, responses) -> list[float].")
    url: str | None = Field(None, description="HTTP endpoint receiving {prompts, responses}, returning {rewards}.")
    timeout_s: float = Field(30.0, gt=0, description="HTTP timeout per request.")
    max_retries: int = Field(3, ge=0, le=100, description="HTTP retries before the step fails.")
    buffer_tokens: int | None = Field(
        None, ge=1, le=131_072, description="kind 'overlong' (DAPO's overlong reward shaping): the buffer L_cache "
        "before the response cap L_max = rollout.sampling.max_new_tokens; a response of n tokens gets "
        "clamp((L_max - L_cache - n) / L_cache, -1, 0) times weight (the penalty factor). At most L_max.")

    @field_validator("kind")
    @classmethod
    def _known_source(cls, value: str) -> str:
        return REWARD_SOURCES.check(value)  # ValueError naming the registered ones


class PPOConfig(Strict):
    steps: int = Field(10, ge=1, description="PPO iterations (rollout + update).")
    rollout_batch_size: int = Field(8, ge=1, description="Prompts per iteration.")
    ppo_epochs: int = Field(1, ge=1, le=100, description="Passes over each rollout batch.")
    clip_eps: float = Field(0.2, gt=0.0, lt=1.0, description="PPO ratio clip epsilon: the ratio is clipped to "
                            "[1 - clip_eps, 1 + clip_eps] unless ppo.clip_eps_low / ppo.clip_eps_high set a bound.")
    clip_eps_low: float | None = Field(
        None, gt=0.0, lt=1.0, description="Asymmetric clip, low bound: the ratio is kept >= 1 - clip_eps_low. None: "
        "ppo.clip_eps. Every clipping policy loss uses it (ppo, gspo, with or without ppo.dual_clip).")
    clip_eps_high: float | None = Field(
        None, gt=0.0, le=10.0, description="Asymmetric clip, high bound: the ratio is kept <= 1 + clip_eps_high; "
        "must be >= the low bound. None: ppo.clip_eps. DAPO's clip-higher (Yu et al. 2025) is clip_eps_low 0.2, "
        "clip_eps_high 0.28 (more room for low-probability tokens to rise, against entropy collapse); GSPO's paper "
        "range is 3e-4 / 4e-4.")
    dual_clip: float | None = Field(None, gt=1.0, description="Dual-clip constant c (>1) for negative advantages.")
    value_clip: float | None = Field(0.2, gt=0.0, description="Critic value clip; None disables.")
    entropy_coef: float = Field(0.0, ge=0.0, description="Entropy bonus coefficient.")
    gamma: float = Field(1.0, ge=0.0, le=1.0, description="Discount factor.")
    lam: float = Field(0.95, ge=0.0, le=1.0, description="GAE lambda.")
    advantage: str = Field(
        "gae", description="Advantage estimator. In parentheses its properties: group = compares the G = "
        "rollout.sampling.samples_per_prompt samples of a prompt (rows k*G .. k*G + G - 1) by their sequence reward "
        "R_i = score_i - kl_coef * sum_t KL_it; needs_critic = the run trains a critic; loss_aggregation = "
        "ppo.loss_aggregation's default with it. " + _choices(ADVANTAGES))
    policy_loss: str = Field(
        "ppo", description="Policy objective, per token min(r*A, clip(r, 1-eps_low, 1+eps_high)*A) (eps_low / "
        "eps_high: ppo.clip_eps_low / ppo.clip_eps_high, default ppo.clip_eps) with the ratio r of: "
        + _choices(POLICY_LOSSES))
    loss_aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"] | None = Field(
        None, description="How the policy loss reduces over tokens: 'token_mean' sum_{i,t} l / n_tokens (every "
        "token weighs the same); 'seq_mean_token_mean' mean_i (mean_t l) (every sequence weighs the same); "
        "'seq_mean_token_sum_norm' sum_{i,t} l / (B * R), R the batch's response columns (Dr. GRPO: no length "
        "normalisation). None: the loss_aggregation the ppo.advantage registers, else the ppo.policy_loss's, else "
        "'token_mean'.")
    dynamic_sampling: bool = Field(
        False, description="DAPO dynamic sampling (Yu et al. 2025): drop prompt groups whose G scores are all equal "
        "(the scores say nothing about which sample is better; with ppo.kl.coef > 0 their advantages are not 0 but "
        "come from the KL penalty alone, so they would only teach the policy to stay near the reference) and sample "
        "more prompts until the batch is full. Only with "
        "a group estimator: ppo.advantage " + ", ".join(f"'{n}'" for n in ADVANTAGES.names(group=True)) + ".")
    dynamic_sampling_max_rounds: int = Field(
        4, ge=1, le=100, description="With ppo.dynamic_sampling: at most this many generation rounds per step "
        "(the first included) to fill the batch with informative groups.")
    whiten_advantages: bool = Field(True, description="Normalise advantages over the batch (GAE).")
    reward_clip: float | None = Field(10.0, gt=0.0, description="Clip sequence scores to +-this; None disables.")
    reward_normalize: bool = Field(False, description="Normalise scores by running mean/std.")
    kl: KLConfig = Field(default_factory=KLConfig, description="KL penalty to the reference.")
    rewards: list[RewardSource] = Field(
        default_factory=lambda: [RewardSource()], min_length=1, description="Reward sources, summed by weight."
    )
    policy_train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=1e-5), description="Policy optimiser and engine."
    )
    critic_train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=1e-5), description="Critic optimiser and engine."
    )
    max_nonfinite_updates: int = Field(
        3, ge=0, description="Abort (after a checkpoint) past this many skipped updates."
    )
    inference_chunk_size: int | None = Field(
        None, ge=1, le=65_536, description="Sequences per forward pass when the reference and policy compute log-probs "
        "and the critic values (bounds activation memory). None: 2 x ppo.policy_train.micro_batch_size.")
    old_logprobs: Literal["recompute", "rollout"] = Field(
        "recompute", description="Where the PPO ratio's old log-probs come from: a policy forward after generation "
        "('recompute': exact, one forward more per step), or the rollout engine's own log-probs of the sampled "
        "tokens ('rollout': saves that forward; they equal the policy's up to the engine's numerics, e.g. bf16 "
        "vLLM kernels, which makes the first epoch's ratio differ slightly from 1).")
    tis_cap: float | None = Field(
        2.0, ge=1.0, description="Truncated importance sampling for off-policy samples: with ppo.old_logprobs "
        "'recompute', each token's policy loss is multiplied by w = min(exp(old_logp - behaviour_logp), tis_cap) "
        "(detached), behaviour_logp being the rollout engine's log-probs (stale weights, other kernels). None: "
        "off. No effect with ppo.old_logprobs 'rollout' (w = 1). ppo.tis_level chooses the ratio.")
    tis_level: Literal["token", "sequence", "geometric"] = Field(
        "token", description="The ratio ppo.tis_cap truncates, with d_t = old_logp_t - behaviour_logp_t on a "
        "response's tokens: 'token' exp(d_t), each token its own (biased, low variance); 'sequence' exp(sum_t d_t) "
        "= pi_old(y|x) / mu(y|x), the whole response's ratio on each of its tokens (unbiased, high variance); "
        "'geometric' exp(mean_t d_t), its per-token geometric mean (veRL's rollout_is_level). Needs ppo.tis_cap "
        "and ppo.old_logprobs 'recompute'.")
    max_staleness: int = Field(
        0, ge=0, le=64, description="Asynchronous PPO: rollouts of the next k steps generate while the current step "
        "trains, on weights at most k policy versions old (0: the synchronous loop, generate -> score -> train -> "
        "sync). Every sample records the version that generated it (async/staleness); stale samples are corrected "
        "by ppo.tis_cap when old log-probs are recomputed. Checkpoint steps drain the pipeline, so restarts and "
        "--resume stay exact.")
    reference_zero_stage: Literal[0, 3] = Field(
        0, description="Frozen reference: 0 = each reference actor holds a full replica; 3 = the "
        "cluster.reference.num_actors ranks shard the weights with DeepSpeed ZeRO-3 inference (each holds 1/N, "
        "the forward gathers layer by layer): for models that do not fit on one device.")

    @field_validator("advantage")
    @classmethod
    def _known_advantage(cls, value: str) -> str:
        return ADVANTAGES.check(value)  # ValueError naming the registered ones

    @field_validator("policy_loss")
    @classmethod
    def _known_policy_loss(cls, value: str) -> str:
        return POLICY_LOSSES.check(value)

    def clip_bounds(self) -> tuple[float, float]:
        """(eps_low, eps_high): ppo.clip_eps_low and ppo.clip_eps_high, each ppo.clip_eps when unset."""
        low = self.clip_eps if self.clip_eps_low is None else self.clip_eps_low
        return low, self.clip_eps if self.clip_eps_high is None else self.clip_eps_high


class SFTStageConfig(Strict):
    epochs: int = Field(1, ge=1, le=1000, description="Passes over the SFT data.")
    train: TrainConfig = Field(default_factory=lambda: TrainConfig(lr=5e-5), description="SFT optimiser and engine.")


class RewardStageConfig(Strict):
    epochs: int = Field(2, ge=1, le=1000, description="Passes over the preference data.")
    train: TrainConfig = Field(
        default_factory=lambda: TrainConfig(lr=5e-4), description="Reward-model optimiser and engine."
    )


class TrackingConfig(Strict):
    progress: bool = Field(True, description="Show a progress bar.")
    jsonl: bool = Field(True, description="Write metrics.jsonl in the run directory.")
    tensorboard: bool = Field(True, description="Write TensorBoard events in the run directory.")
    wandb_project: str | None = Field(None, description="Log to this Weights & Biases project (needs wandb).")


class CheckpointConfig(Strict):
    every_steps: int = Field(0, ge=0, description="Checkpoint every k PPO steps (`rlhf-dist dpo`: every k "
                             "optimizer updates); 0 = only at the end.")
    keep_last: int = Field(2, ge=1, description="Checkpoints kept on disk.")
    resume: bool | Literal["auto"] = Field(
        False, description="Continue from the newest complete checkpoint in the run directory: true (it must "
        "exist), 'auto' (when there is one, else start fresh; for jobs that may be requeued), false (start fresh).")
    checksums: bool = Field(
        True, description="Record the sha256 of every checkpoint file in its manifest and verify it on load "
        "(sizes are always checked); turn off when hashing very large checkpoints costs too much.")


class FaultToleranceConfig(Strict):
    max_restarts: int = Field(
        2, ge=0, le=1000, description="When an actor dies or misses its deadline (cluster.dead_actor_timeout_s), "
        "replace the failed roles' groups (every group before the first checkpoint), restore the newest complete "
        "checkpoint and go on; at most this many times per run (0: fail at the first fault). SFT and "
        "reward-model training on a group start again from their beginning (they keep no checkpoints).")
    node_wait_s: float = Field(
        300.0, gt=0, le=86_400, description="After a fault, how long the replaced roles may wait for Ray to reserve "
        "their placement again (a lost node's share: the node coming back, a replacement joining, or spare "
        "capacity). Past it the run ends with exit code 75 (resumable) and its newest checkpoint intact: "
        "`--resume auto` continues once the nodes are back.")


class EvalConfig(Strict):
    judge: str = Field(
        "sentiment",
        description=("Held-out judge of the win rate against the starting policy (never the trained reward "
                     "model): 'sentiment', 'length', 'lowercase', 'vowel', or a 'module:callable' rule."),
    )
    num_prompts: int = Field(
        64, ge=1, le=1_000_000, description="Held-out prompts evaluated (the first N of data.eval_prompts_path)."
    )
    seed: int = Field(
        1234, ge=0, description="Sampling seed, the same for policy and starting policy (common random numbers)."
    )
    batch_size: int = Field(
        16, ge=1, le=65_536, description="Sequences per forward pass for log-probs and reward scores."
    )
    placement: Literal["auto", "driver", "cluster"] = Field(
        "auto", description="Where evaluation's models run. 'cluster': generation on rollout engines "
        "(cluster.rollout, rollout.backend), log-probs on frozen actors (cluster.reference), reward scores on "
        "reward actors (cluster.reward), nothing in the driver. 'driver': transformers generate and forward "
        "passes in the launching process (a one-process CPU run). 'auto': cluster on CUDA, driver on CPU. "
        "Pairs for people (feedback generate, pipeline and service rounds, human evaluation) are sampled and "
        "ranked (feedback.selection) the same way: on rollout engines and reward actors, or in the launching "
        "process.")

    @field_validator("judge")
    @classmethod
    def _known_judge(cls, value: str) -> str:
        from rlhf_dist.data.text_rules import judge_spec

        judge_spec(value)  # raises ValueError naming the known judges
        return value


class RunConfig(Strict):
    name: str = Field("rlhf", min_length=1, description="Run name (used in the output directory).")
    output_dir: str = Field("runs/rlhf", description="Directory for checkpoints, metrics, models and reports.")
    seed: int = Field(0, ge=0, description="Global seed: data order, sampling, init.")


class RLHFConfig(Strict):
    """Every option of rlhf-dist. Sections map to stages and roles."""

    run: RunConfig = Field(default_factory=RunConfig, description="Run name, output directory and seed.")
    policy: ModelConfig = Field(
        default_factory=ModelConfig, description="The policy model (also the frozen reference's starting point)."
    )
    reward_model: RewardModelConfig = Field(
        default_factory=RewardModelConfig, description="The reward model's backbone and pooling."
    )
    critic: CriticConfig = Field(
        default_factory=CriticConfig, description="The critic (value head) and what it starts from."
    )
    data: DataConfig = Field(default_factory=DataConfig, description="Datasets, formats, validation and tokenisation.")
    sft: SFTStageConfig = Field(default_factory=SFTStageConfig, description="Stage 1: supervised fine-tuning.")
    reward: RewardStageConfig = Field(default_factory=RewardStageConfig, description="Stage 2: reward-model training.")
    ppo: PPOConfig = Field(default_factory=PPOConfig, description="Stage 3: PPO against the reward.")
    dpo: DPOStageConfig = Field(
        default_factory=DPOStageConfig, description="Direct preference optimisation of the policy on the "
        "preference pairs (`rlhf-dist dpo`): the alternative to reward model + PPO.")
    rollout: RolloutConfig = Field(default_factory=RolloutConfig, description="Rollout generation engines.")
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig, description="Ray cluster, devices and per-role placement."
    )
    tracking: TrackingConfig = Field(default_factory=TrackingConfig, description="Metrics sinks and progress display.")
    checkpoint: CheckpointConfig = Field(default_factory=CheckpointConfig, description="Checkpointing and resume.")
    fault_tolerance: FaultToleranceConfig = Field(
        default_factory=FaultToleranceConfig, description="Restarting roles after a fault."
    )
    eval: EvalConfig = Field(default_factory=EvalConfig, description="Held-out evaluation (`rlhf-dist eval`).")
    pipeline: PipelineConfig = Field(default_factory=PipelineConfig, description="The full pipeline and its rounds.")
    feedback: FeedbackConfig = Field(default_factory=FeedbackConfig,
                                     description="The human-feedback service and its database.")

    @model_validator(mode="after")
    def _cross_field_rules(self) -> "RLHFConfig":
        from rlhf_dist.config.checks import check_cross_field

        check_cross_field(self)
        return self
