"""All stages in order (`rlhf-dist pipeline CONFIG`), with iterative rounds.

    round 1:  [SFT] -> reward model on the configured preferences -> PPO
    round r:  sample two responses per prompt with the current policy -> preferences from
              feedback.source (a simulated annotator in-process, the feedback database, or people /
              simulated annotators voting through the feedback service) -> retrain the RM on all
              feedback so far -> PPO again from the current policy
    end:      held-out evaluation (judge != training RM) -> report -> summary.json

pipeline.method dpo / online_dpo: each round's preferences train the policy by DPO instead (stages/dpo_rounds.py).

Run again on the same run dir, it goes on where it stopped: finished rounds reused, a round's stored feedback
never sampled or added twice, PPO from its checkpoint (stages/resume.py); --fresh starts clean.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.data.errors import DataFileError
from rlhf_dist.data.readers import write_jsonl
from rlhf_dist.data.records import ABFeedback
from rlhf_dist.feedback import FeedbackStore, SimulatedAnnotator
from rlhf_dist.feedback.db import db_url_of
from rlhf_dist.stages.inputs import check_cluster, check_inputs, pipeline_splits
from rlhf_dist.stages.resume import PipelineState, check_fresh, set_aside
from rlhf_dist.tracking.console import StageProgress
from rlhf_dist.storage import localize, push_outputs
from rlhf_dist.utils import prepare_run_dir, write_json
from rlhf_dist.data.files import resolve_data_files

log = logging.getLogger(__name__)
MAX_PASSES = 4  # passes over a round's prompts while collecting pipeline.min_decisive_pairs


@dataclass
class RoundResult:
    reward_dir: Path | None  # None: a DPO round (pipeline.method dpo / online_dpo) trains no reward model
    policy_dir: Path
    rm_metrics: dict
    dpo_metrics: dict = field(default_factory=dict)  # a DPO round's last held-out figures (accuracy, margin, ...)


def feedback_store(cfg: RLHFConfig) -> FeedbackStore:
    return FeedbackStore(db_url_of(cfg.feedback.db_url, cfg.run.output_dir))


def round_prompts(cfg: RLHFConfig) -> list[str]:
    from rlhf_dist.data import load_records

    prompts = [r.prompt for r in load_records(resolve_data_files(cfg).prompts, "prompt", on_error="skip").records]
    return prompts[: cfg.pipeline.pairs_per_round]


def collect_round_feedback(cfg: RLHFConfig, policy_dir: Path, store: FeedbackStore, round_index: int) -> int:
    """Two samples per prompt from the current policy, judged in-process by the simulated annotator, stored.

    Passes over the round's prompts repeat (new sampling seeds) until pipeline.min_decisive_pairs pairs
    were judged A or B, at most MAX_PASSES times: a rule that often calls a tie leaves few pairs to learn from.
    Each pass is stored at once, keyed by campaign "<run.name>-round-<r>" and its sampling seed: a restarted
    pipeline reuses the passes it finds (no sampling, nothing added) and samples only the ones still missing.
    Returns the judgements the round has (found + new).
    """
    from rlhf_dist.driver.sampling import pair_sampler
    from rlhf_dist.feedback.generate import sample_pairs
    from rlhf_dist.stages.feedback_rounds import round_campaign

    sim, campaign = cfg.feedback.simulated, round_campaign(cfg, round_index)
    prompts, added, decisive = round_prompts(cfg), 0, 0
    for attempt in range(MAX_PASSES):
        seed = cfg.run.seed * 31 + round_index + 1000 * attempt
        judged = store.judged_pass(campaign, seed)
        if judged is not None:
            log.info("round %d pass %d: %d judgements already stored in %s (campaign %s): reused, not sampled "
                     "again", round_index, attempt + 1, len(judged), store.where, campaign)
            judgements = [row.preference for row in judged]
        else:
            # one annotator seed per pass: a pass judged after a restart gets the labels it would have got
            annotator = SimulatedAnnotator(sim.rule, sim.noise, sim.tie_margin, tie_rate=sim.tie_rate,
                                           seed=cfg.run.seed + round_index + 1000 * attempt)
            pairs = sample_pairs(cfg, policy_dir, prompts, seed=seed, sampler=pair_sampler(cfg))
            with StageProgress(f"round {round_index} pass {attempt + 1}: judging", total=len(pairs),
                               enabled=cfg.tracking.progress) as bar:
                labels, shown = [], decisive
                for pair in pairs:
                    labels.append(annotator.judge(pair.prompt, pair.response_a, pair.response_b))
                    shown += labels[-1][0] != 2
                    bar.advance(status=f"{shown} decisive")
            if not store.add_pass(campaign, round_index, seed, pairs, labels):
                raise DataFileError(f"round {round_index}: campaign {campaign} in {store.where} holds pairs of "
                                    f"sampling seed {seed} without in-process judgements (made for feedback.source "
                                    "service?): go on with that source, or start clean with --fresh")
            judgements = [preference for preference, _confidence, _reasoning in labels]
        added, decisive = added + len(judgements), decisive + sum(p != 2 for p in judgements)
        log.info("round %d pass %d: %d decisive pairs so far (want %d)", round_index, attempt + 1, decisive,
                 cfg.pipeline.min_decisive_pairs)
        if decisive >= cfg.pipeline.min_decisive_pairs:
            break
    log.info("round %d: %d pairs judged, %d decisive (%d ties)", round_index, added, decisive, added - decisive)
    return added


def split_feedback(rows: list[ABFeedback], out_dir: Path, eval_fraction: float = 0.2) -> tuple[Path, Path]:
    """A/B rows as train / held-out JSONL, split by a hash of each row (stable across rounds)."""
    train, held_out = [], []
    for row in rows:
        digest = hashlib.sha1(f"{row.prompt}\x00{row.response_a}\x00{row.response_b}".encode()).digest()
        (held_out if digest[0] < 256 * eval_fraction else train).append(row)
    if not train or not held_out:
        raise ValueError(f"{len(rows)} feedback rows give {len(train)} train / {len(held_out)} held-out rows; "
                         "collect more")
    return write_jsonl(out_dir / "feedback_train.jsonl", train), write_jsonl(out_dir / "feedback_eval.jsonl", held_out)


def round_preferences(cfg: RLHFConfig, round_index: int, round_dir: Path, policy_dir: Path, store: FeedbackStore,
                      snapshots: list[Path], reward_dir: Path | None, state: PipelineState,
                      only_this_round: bool = False) -> tuple[Path, Path]:
    """This round's labels from feedback.source; train/held-out files over all feedback so far (only_this_round:
    over this round's new labels alone, pipeline.method online_dpo)."""
    source = cfg.feedback.source
    if source in ("service", "service-simulated"):
        from rlhf_dist.data import load_records
        from rlhf_dist.stages.feedback_rounds import collect_service_round

        earlier = [row for path in snapshots for row in load_records(path, "ab").records]
        snapshot = state.snapshot(round_index)
        if snapshot is not None:  # exported before a restart: the same file, no new snapshot version
            log.info("round %d: votes exported earlier to %s: reused", round_index, snapshot)
        else:
            snapshot = collect_service_round(cfg, round_index, round_dir, policy_dir, round_prompts(cfg), reward_dir,
                                             earlier)
            state.record(round_index, snapshot=snapshot)
        snapshots.append(snapshot)
        rows = ([] if only_this_round else earlier) + load_records(snapshot, "ab").records
        log.info("round %d: reward model trains on %d snapshot(s), %d rows", round_index, len(snapshots), len(rows))
        return split_feedback(rows, round_dir)
    if source == "simulated":
        n = collect_round_feedback(cfg, policy_dir, store, round_index)
        log.info("round %d: %d simulated judgements in %s", round_index, n, store.where)
    if len(store) == 0:
        raise DataFileError(f"round {round_index}: the feedback store {store.where} is empty: collect feedback first")
    return split_feedback(store.records(round_index if only_this_round else None), round_dir)


def run_round(cfg: RLHFConfig, round_index: int, round_dir: Path, policy_dir: Path, store: FeedbackStore,
              snapshots: list[Path], reward_dir: Path | None, state: PipelineState) -> RoundResult:
    """Feedback -> reward model -> PPO (pipeline.method dpo / online_dpo: feedback -> DPO, stages/dpo_rounds.py);
    what an earlier run of this pipeline finished is reused (stages/resume.py)."""
    if cfg.pipeline.method != "ppo":
        from rlhf_dist.stages.dpo_rounds import run_dpo_round

        return run_dpo_round(cfg, round_index, round_dir, policy_dir, store, snapshots, state)
    from rlhf_dist.stages.ppo import run_ppo_stage
    from rlhf_dist.stages.reward import train_reward_model

    done, saved = state.finished_policy(round_index), state.reward_model(round_index)
    if done is not None and saved is not None:
        if (snapshot := state.snapshot(round_index)) is not None:
            snapshots.append(snapshot)
        log.info("round %d finished in an earlier run: its reward model %s and policy %s are reused", round_index,
                 saved[0], done)
        return RoundResult(saved[0], done, saved[1])
    rm_cfg = with_overrides(cfg, {"run.output_dir": str(round_dir)})
    if round_index > 1 or cfg.pipeline.first_round_preferences == "policy_samples":
        train_file, eval_file = round_preferences(cfg, round_index, round_dir, policy_dir, store, snapshots,
                                                  reward_dir, state)
        rm_cfg = with_overrides(cfg, {"run.output_dir": str(round_dir), "data.pairs_path": str(train_file),
                                      "data.eval_pairs_path": str(eval_file), "data.pairs_format": "ab"})
    ppo_cfg = with_overrides(cfg, {"run.output_dir": str(round_dir), "policy.path": str(policy_dir)})
    if saved is not None:  # so this round's PPO started in an earlier run: it goes on from its newest checkpoint
        log.info("round %d: the reward model saved in an earlier run (%s) is reused; PPO continues from its "
                 "newest checkpoint in %s, if any", round_index, saved[0], round_dir / "checkpoints")
        ppo_cfg = with_overrides(ppo_cfg, {"checkpoint.resume": "auto"})
    else:
        rm = train_reward_model(rm_cfg)
        saved = rm.model_dir, rm.final_metrics
        state.record(round_index, reward_dir=saved[0], rm_metrics=saved[1])
    ppo = run_ppo_stage(ppo_cfg, policy_dir=policy_dir, reward_dir=saved[0])
    state.record(round_index, policy_dir=ppo.policy_dir)
    return RoundResult(saved[0], ppo.policy_dir, saved[1])


def run_pipeline(cfg: RLHFConfig, fresh: bool = False) -> dict:
    """Every stage, every round, then evaluation and the report; returns the summary.

    Run again on the same run dir, it goes on where the earlier run stopped (stages/resume.py); fresh: the
    earlier run is moved aside first and everything starts clean."""
    started = time.time()
    if fresh:
        check_fresh(cfg)  # a storage URI is refused before localize makes its staging dir
    cfg = localize(cfg)  # run.output_dir a storage URI: written to a staging dir, mirrored to the URI
    # both models and every data file the rounds and the evaluation read: checked before the first write
    dirs = check_inputs(cfg, ["policy.path", "reward_model.path"], pipeline_splits(cfg))
    check_cluster(cfg)  # PPO joins cluster.address: an unreachable head or a missing token in one line
    if fresh:
        set_aside(Path(cfg.run.output_dir))
    run_dir = prepare_run_dir(cfg)
    state = PipelineState(run_dir, cfg)
    store = feedback_store(cfg)
    if not state.earlier and cfg.feedback.source == "simulated" and len(store):
        # e.g. a run dir of a version before pipeline_state.json, whose judgements would be added to
        log.warning("the feedback database %s already holds %d judgements this pipeline did not make: its reward "
                    "models train on them too (--fresh starts clean)", store.where, len(store))
    policy_dir = dirs["policy.path"]
    if cfg.pipeline.run_sft:
        from rlhf_dist.stages.sft import train_sft

        policy_dir = state.sft_dir() or state.record_sft(train_sft(cfg).model_dir)
    start_policy = policy_dir  # what PPO starts from: the baseline for the win rate
    rounds: list[RoundResult] = []
    snapshots: list[Path] = []  # service rounds' vote snapshots: each round's RM trains on all of them
    for r in range(1, cfg.pipeline.rounds + 1):
        round_dir = run_dir if r == 1 else run_dir / f"round{r}"
        previous_rm = rounds[-1].reward_dir if rounds else None
        rounds.append(run_round(cfg, r, round_dir, policy_dir, store, snapshots, previous_rm, state))
        policy_dir = rounds[-1].policy_dir
    summary = finish(cfg, run_dir, policy_dir, start_policy, rounds[-1], started)
    summary["feedback"] = store.statistics()
    if cfg.feedback.human_eval_prompts and cfg.feedback.source in ("service", "service-simulated"):
        from rlhf_dist.stages.feedback_rounds import run_human_evaluation

        summary["human_evaluation"] = run_human_evaluation(cfg, run_dir, policy_dir, start_policy)
    summary["feedback_snapshots"] = [str(p) for p in snapshots]
    write_json(run_dir / "summary.json", summary)
    push_outputs(run_dir)  # summary, report/, metrics, every round's models (checkpoints went up as written)
    return summary


def _accuracy_ci(metrics: dict) -> list[float] | None:
    """Wilson 95% interval of the RM's held-out accuracy: how much the figure can be trusted."""
    from rlhf_dist.algo.metrics import wilson_interval

    n, acc = metrics.get("n_pairs"), metrics.get("accuracy")
    if not n or acc is None:
        return None
    return [round(x, 4) for x in wilson_interval(acc * n, n)]


def metric_names(cfg: RLHFConfig) -> dict[str, str]:
    """One name per figure (summary.json, the demo's console lines, the report): the last RM's validation
    accuracy and the eval's RM accuracy are measured on different pairs."""
    feedback = cfg.pipeline.rounds > 1 or cfg.pipeline.first_round_preferences == "policy_samples"
    d = cfg.data
    eval_pairs = f"eval pairs ({d.eval_pairs_path})" if d.eval_pairs_path else "built-in eval pairs"
    # the user's pairs without eval pairs: the RM stage held every 10th of them out (stages/reward.py)
    own = f"pairs held out of {d.pairs_path}" if d.pairs_path and not d.eval_pairs_path else eval_pairs
    validation = "held-out feedback pairs" if feedback else own
    return {"rm_accuracy": f"RM accuracy on {validation}", "rm_eval_pairs": f"{validation} (count)",
            "rm_accuracy_eval_pairs": f"RM accuracy on {eval_pairs}"}


def finish(cfg: RLHFConfig, run_dir: Path, policy_dir: Path, start_policy: Path, last: RoundResult,
           started: float) -> dict:
    """Held-out evaluation, report, summary."""
    from rlhf_dist.eval.evaluate import evaluate_policy
    from rlhf_dist.eval.report import write_report

    with StageProgress("held-out evaluation", enabled=cfg.tracking.progress):
        ev = evaluate_policy(cfg, policy_dir, start_policy, last.reward_dir, judge=cfg.eval.judge)
    summary = {
        # held-out accuracy of the last round's RM on the data it was validated on (for rounds trained on
        # annotated policy samples: a held-out fifth of that feedback); eval's figure is on data.eval_pairs
        "rm_accuracy": last.rm_metrics.get("accuracy"),
        "rm_accuracy_ci95": _accuracy_ci(last.rm_metrics), "rm_eval_pairs": last.rm_metrics.get("n_pairs"),
        "rm_accuracy_eval_pairs": ev.get("rm_accuracy"),
        "metric_names": metric_names(cfg),
        "win_rate": ev["win_rate"], "kl": ev["kl"], "wall_seconds": round(time.time() - started, 1),
        "method": cfg.pipeline.method,
        # DPO rounds: the policy's own held-out preference accuracy (implicit rewards), no reward model
        **({"dpo_accuracy": last.dpo_metrics.get("accuracy")} if cfg.pipeline.method != "ppo" else {}),
        "judge": cfg.eval.judge, "eval": ev, "policy_dir": str(policy_dir), "start_policy_dir": str(start_policy),
    }
    write_json(run_dir / "summary.json", summary)
    summary["report"] = str(write_report(run_dir))
    return summary
