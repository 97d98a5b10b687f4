"""The PPO loop. Reads top to bottom: one iteration = one named call per phase.

    prompts -> generate (vLLM engines) -> score (reward actors / function / HTTP)
            -> log-probs (policy, reference) + values (critic)
            -> KL-shaped rewards, advantages (algo/)
            -> policy + critic PPO epochs (DeepSpeed groups, concurrently)
            -> weight sync policy -> engines
            -> metrics, KL controller, checkpoint

The driver holds no model: it moves token ids, texts and [B, R] tensors between roles.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import ray

from rlhf_dist.algo import RunningMeanStd, build_kl_controller
from rlhf_dist.algo.kl import KLController
from rlhf_dist.config import ConfigError, RLHFConfig
from rlhf_dist.config.topology import engines_sleep
from rlhf_dist.data.tokenize import encode_prompt
from rlhf_dist.data.validate import load_records
from rlhf_dist.driver.checkpoint import CheckpointManager
from rlhf_dist.driver.rewards import combine_rewards
from rlhf_dist.driver.preemption import PreemptionGuard
from rlhf_dist.driver.actors import (
    ModelDirs, Roles, build_roles, finish_inference, memory_peaks, model_scores, replace_failed_roles, start_inference,
    start_ray, update_policy_and_critic,
)
from rlhf_dist.driver.dynamic_sampling import informative_batch
from rlhf_dist.driver.rollouts import RolloutQueue
from rlhf_dist.driver.experience import make_experience
from rlhf_dist.driver.state import DriverState, PromptSampler, rng_state, set_rng_state
from rlhf_dist.models import load_tokenizer
from rlhf_dist.utils import Preempted, prepare_run_dir, seed_everything, write_json
from rlhf_dist.data.files import resolve_data_files
from rlhf_dist.tracking import MetricsLogger
from rlhf_dist.tracking.console import ppo_step_line, ppo_timing_table, say
from rlhf_dist.tracking.timing import PhaseTimer
from rlhf_dist.workers.group import WorkerError

log = logging.getLogger(__name__)


class TrainingAborted(RuntimeError):
    """Too many non-finite updates; a checkpoint was written first."""


@dataclass
class PPOResult:
    run_dir: Path
    history: list[dict] = field(default_factory=list)  # one metrics dict per step
    policy_dir: Path | None = None  # HF export of the final policy
    critic_dir: Path | None = None  # HF export of the final critic (GAE runs)


def _load_prompts(cfg: RLHFConfig, tokenizer) -> tuple[list[str], list[list[int]]]:
    files = resolve_data_files(cfg)
    loaded = load_records(files.prompts, "prompt", on_error=cfg.data.on_error)
    log.info("prompts %s: %s", files.prompts, loaded.summary())
    texts = [r.prompt for r in loaded.records]
    return texts, [encode_prompt(tokenizer, t, cfg.data.max_prompt_length) for t in texts]


def run_ppo(cfg: RLHFConfig, dirs: ModelDirs, stop_after: int | None = None) -> PPOResult:
    """Train for cfg.ppo.steps (or stop after `stop_after` steps, as if killed) and export the policy.

    A role that dies or hangs (WorkerError) costs a restart: the failed role's group (and any other that no
    longer answers) is built again, and every role goes on from the newest complete checkpoint
    (fault_tolerance.max_restarts times; without a checkpoint yet, every group is rebuilt).
    SIGTERM/SIGINT: checkpoint at the end of the current step, then Preempted (exit EXIT_PREEMPTED)."""
    seed_everything(cfg.run.seed)
    ckpt = CheckpointManager(Path(cfg.run.output_dir), cfg.checkpoint.keep_last, cfg.checkpoint.checksums)
    if cfg.checkpoint.resume is True and ckpt.latest() is None:
        raise ConfigError([f"checkpoint.resume: no complete checkpoint in {ckpt.root} (use --resume auto to "
                           "start fresh when there is none)"])
    tokenizer = load_tokenizer(dirs.policy)
    prompt_texts, prompt_ids = _load_prompts(cfg, tokenizer)  # validated before the run dir gets config.yaml
    run_dir = prepare_run_dir(cfg)
    ppo = cfg.ppo
    n_samples = ppo.rollout_batch_size * cfg.rollout.sampling.samples_per_prompt
    total_updates = ppo.steps * ppo.ppo_epochs * n_samples // ppo.policy_train.global_batch_size
    started_ray = start_ray(cfg)
    result, restarts, roles = PPOResult(run_dir), 0, None
    try:
        with PreemptionGuard() as preemption:
            roles = build_roles(cfg, dirs, total_updates=total_updates)
            failure: WorkerError | None = None
            while True:
                try:
                    if failure is not None:  # only what failed is replaced; every role is restored from the checkpoint
                        roles = replace_failed_roles(cfg, roles, failure, dirs, total_updates, ckpt.latest())
                    _run_steps(cfg, roles, ckpt, result, (prompt_texts, prompt_ids, tokenizer), stop_after,
                           resume=bool(cfg.checkpoint.resume) or restarts > 0, restarts=restarts,
                           preemption=preemption)
                    break
                except WorkerError as err:  # also while replacing: a lost node's actors can die as they start
                    restarts += 1
                    if restarts > cfg.fault_tolerance.max_restarts:
                        raise
                    log.warning("restart %d/%d after a role failure", restarts, cfg.fault_tolerance.max_restarts)
                    failure = err
        write_json(run_dir / "ppo_metrics.json", {"history": result.history, "restarts": restarts})
        say(ppo_timing_table(result.history))
        return result
    finally:
        if roles is not None:
            roles.shutdown()
        if started_ray:
            ray.shutdown()


def _restore(cfg: RLHFConfig, roles: Roles, ckpt: CheckpointManager, resume: bool,
             kl_ctl: KLController, reward_norm: RunningMeanStd) -> DriverState:
    """The newest complete checkpoint into the roles and the driver's state; a fresh state without one."""
    latest = ckpt.latest() if resume else None
    if latest is None:
        seed_everything(cfg.run.seed)  # a restart before the first checkpoint repeats the run from its start
        return DriverState()
    state = ckpt.load(latest, roles.trainers())
    kl_ctl.load_state_dict(state.kl_controller)
    if state.reward_norm:
        reward_norm.load_state_dict(state.reward_norm)
    set_rng_state(state.rng)
    roles.weight_sync.sync()  # engines start from the initial weights: bring them to the checkpoint's
    return state


def _run_steps(cfg: RLHFConfig, roles: Roles, ckpt: CheckpointManager, result: PPOResult, prompts: tuple,
           stop_after: int | None, resume: bool, restarts: int, preemption: PreemptionGuard) -> None:
    """Steps from the restored state to the end; checkpoints; the policy export at the last step."""
    ppo, (prompt_texts, prompt_ids, tokenizer) = cfg.ppo, prompts
    kl_ctl = build_kl_controller(ppo.kl.controller, ppo.kl.coef, ppo.kl.target, ppo.kl.horizon)
    reward_norm = RunningMeanStd()
    state = _restore(cfg, roles, ckpt, resume, kl_ctl, reward_norm)
    result.history = [row for row in result.history if row["step"] <= state.step]  # steps redone after a restart
    sampler = PromptSampler(len(prompt_texts), cfg.run.seed, **state.data)
    last = min(ppo.steps, stop_after) if stop_after else ppo.steps
    # ppo.max_staleness > 0: the next steps' rollouts generate while this one trains (driver/rollouts.py)
    rollouts = RolloutQueue(cfg, roles, sampler, (prompt_texts, prompt_ids, tokenizer), last)
    with MetricsLogger(result.run_dir, cfg.tracking, total=last - state.step, desc="ppo", plain_lines=False) as tracker:
        for step in range(state.step + 1, last + 1):
            rollouts.fill(step, version=step - 1)  # the policy has had step - 1 updates, each one synced
            metrics = ppo_step(cfg, roles, step, rollouts, kl_ctl, reward_norm, cfg.rollout.sampling.samples_per_prompt)
            metrics["fault/restarts"] = float(restarts)
            state.skipped_updates += int(metrics["train/skipped_updates"])
            state.step, state.data = step, rollouts.data_after  # not the sampler's: it may be steps ahead
            state.kl_controller, state.reward_norm = kl_ctl.state_dict(), reward_norm.state_dict()
            state.rng = rng_state()
            tracker.log(metrics, step=step, phase="ppo")
            tracker.advance(status=_status_line(metrics))
            tracker.print(ppo_step_line(step, last, metrics, tracker.progress.eta()))
            result.history.append({"step": step, **metrics})
            if state.skipped_updates > ppo.max_nonfinite_updates:
                ckpt.save(state, roles.trainers())
                raise TrainingAborted(f"{state.skipped_updates} non-finite updates skipped (limit "
                                      f"ppo.max_nonfinite_updates={ppo.max_nonfinite_updates}); checkpoint written")
            every = cfg.checkpoint.every_steps
            if (every and step % every == 0) or step == ppo.steps or preemption.requested:
                ckpt.save(state, roles.trainers())
            if preemption.requested and step < ppo.steps:
                raise Preempted(f"{preemption.requested}: stopped after step {step}, checkpoint written to "
                                f"{ckpt.root}; continue with --resume auto")
    if state.step == ppo.steps:
        result.policy_dir = roles.policy.export_hf(result.run_dir / "policy").result()
        if roles.critic is not None:  # loads with AutoModelForSequenceClassification (decoder backbones)
            result.critic_dir = roles.critic.export_hf(result.run_dir / "critic").result()


def ppo_step(cfg, roles, step, rollouts: RolloutQueue, kl_ctl, reward_norm, group_size) -> dict:
    """One PPO iteration; returns its metrics (rewards, KL, losses, per-phase seconds)."""
    timer = PhaseTimer()
    # 1-2. this step's prompts and rollouts, B = prompts x samples_per_prompt sequences, [B, P+R]: generated
    #      by policy version `version` (started ahead with ppo.max_staleness; the time is the driver's wait)
    with timer("generation"):
        batch, version = rollouts.take(step)
    staleness = (step - 1) - version
    if not 0 <= staleness <= cfg.ppo.max_staleness:
        raise RuntimeError(f"step {step}: rollout from policy version {version} is {staleness} versions old "
                           f"(ppo.max_staleness {cfg.ppo.max_staleness})")
    def score(b):  # -> scores [B], mean of each reward source
        return combine_rewards(cfg.ppo.rewards, b.prompts, b.responses,
                               (lambda: model_scores(roles, b.prompts, b.responses)) if roles.reward else None,
                               b.inputs.action_mask.sum(1).long().tolist(), cfg.rollout.sampling.max_new_tokens)

    dapo_stats: dict[str, float] = {}
    if cfg.ppo.dynamic_sampling:  # 3a. DAPO: score first, keep informative groups, sample more rounds
        with timer("scoring"):
            batch, scores, reward_parts, dapo_stats = informative_batch(
                cfg, batch, score, lambda round_: rollouts.extra(step, round_), rollouts.tokenizer.pad_token_id)
    # 3. inference starts now (policy/ref log-probs [B, R], values [B, R]) and overlaps scoring
    jobs = start_inference(roles, batch, recompute_old_logprobs=cfg.ppo.old_logprobs == "recompute")
    if not cfg.ppo.dynamic_sampling:
        with timer("scoring"):
            scores, reward_parts = score(batch)  # [B]
    with timer("inference"):
        inference = finish_inference(jobs, batch)
    # 4. KL-shaped rewards, advantages and returns, [B, R]
    with timer("advantages"):
        experience, exp_stats = make_experience(cfg.ppo, batch, inference, scores, kl_ctl.coef, reward_norm, group_size)
    # 5. policy and critic updates (concurrent groups); colocated on CUDA the engines sleep meanwhile
    with timer("training"):
        if sleeping := engines_sleep(cfg):
            roles.rollout.sleep().result()
        train_stats, train_seconds = update_policy_and_critic(roles, experience, step)
    # 6. new policy weights -> rollout engines
    with timer("sync"):
        if sleeping:
            roles.rollout.wake_up().result()
        synced_bytes = roles.weight_sync.sync()
    # 7. every role's peak memory during this step (after the sync: nothing runs on the engines now)
    memory = memory_peaks(roles)
    kl_ctl.update(exp_stats["kl/seq_k1"], n_steps=len(batch))
    return {
        **exp_stats, **reward_parts, **train_stats, **dapo_stats, **memory,
        **{f"time/{k}": v for k, v in train_seconds.items()},
        "sync/bytes": float(synced_bytes),
        "async/staleness": float(staleness),
        **timer.summary(),
    }


def _status_line(m: dict) -> str:
    return (f"reward {m['reward/score_raw']:.3f}  kl {m['kl/seq_k1']:.3f}  "
            f"len {m['response/length']:.1f}  step {m['time/step']:.1f}s")
