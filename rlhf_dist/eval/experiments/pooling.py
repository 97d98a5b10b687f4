"""Seed experiment 1: reward-model pooling, last position vs the mean over all positions.

    rlhf-dist experiment pooling          # -> <out>/pooling.{json,png}

The reward model is trained twice by the RM stage (rlhf_dist.stages.reward) on the same preference
pairs, same seed and settings, changing only reward_model.pooling ("last": the head's output at the
last real token; "mean": the mean of the head's outputs over all real tokens). Measured: the held-out
pairwise accuracy after the last epoch, with its 95% Wilson interval over the held-out pairs, and the
accuracy after every epoch.

The pairs (--pairs): "policy" (default) samples two responses per prompt from the starting policy and
labels them with the simulated annotator (feedback.simulated), as the demo collects its feedback;
"builtin" uses the built-in phrase-bank pairs, which SmolLM2 separates perfectly after one epoch
(measured with last pooling: held-out accuracy 1.000 on 128 pairs, loss 0.0000 in epoch 2), so they
leave no room for a difference. Users' own pairs: --data.pairs_path / --data.eval_pairs_path.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.config import RLHFConfig, with_overrides
from rlhf_dist.eval.experiments.common import BRIEF_INSTRUCTION, new_figure, provenance, save_figure
from rlhf_dist.utils import write_json

if TYPE_CHECKING:
    from rlhf_dist.stages.reward import RewardTrainResult

POOLINGS = ("last", "mean")
PAIR_SOURCES = ("policy", "builtin")


def policy_pairs(cfg: RLHFConfig, root: Path) -> dict[str, str]:
    """A/B pairs sampled from the starting policy (two responses per one-sentence built-in prompt, one
    engine start for both splits), labelled by the simulated annotator; the data.* updates that use them.

    data.demo_size prompts on the built-in train topics, as many held out on the eval topics (ties are
    dropped by the RM stage, so both splits shrink by the annotator's tie rate)."""
    from rlhf_dist.data.demo import demo_prompts
    from rlhf_dist.data.readers import write_jsonl
    from rlhf_dist.data.records import ABFeedback
    from rlhf_dist.driver.sampling import pair_sampler
    from rlhf_dist.feedback.generate import sample_pairs
    from rlhf_dist.feedback.simulated import SimulatedAnnotator
    from rlhf_dist.models import resolve_model_path

    seed, n_train = cfg.run.seed, cfg.data.demo_size
    prompts = [p.prompt + BRIEF_INSTRUCTION for split in ("train", "eval")
               for p in demo_prompts(n_train, seed=seed, split=split)]
    sampling_cfg = with_overrides(cfg, {"run.output_dir": str(root)}, source="pooling pairs")  # engine log here
    pairs = sample_pairs(sampling_cfg, resolve_model_path(cfg.policy.path, seed=seed), prompts, seed=seed,
                         sampler=pair_sampler(sampling_cfg))
    sim = cfg.feedback.simulated
    annotator = SimulatedAnnotator(sim.rule, sim.noise, sim.tie_margin, seed=seed, tie_rate=sim.tie_rate)
    rows = []
    for pair in pairs:
        preference, confidence, reasoning = annotator.judge(pair.prompt, pair.response_a, pair.response_b)
        rows.append(ABFeedback(prompt=pair.prompt, response_a=pair.response_a, response_b=pair.response_b,
                               preference=preference, confidence=confidence, reasoning=reasoning))
    train = write_jsonl(root / "pairs" / "train.jsonl", rows[:n_train])
    held_out = write_jsonl(root / "pairs" / "eval.jsonl", rows[n_train:])
    return {"data.pairs_path": str(train), "data.eval_pairs_path": str(held_out), "data.pairs_format": "ab"}


def _arm(cfg: RLHFConfig, pooling: str, run_dir: Path) -> dict:
    from rlhf_dist.algo.metrics import wilson_interval  # rlhf_dist.algo imports torch: not at CLI start
    from rlhf_dist.stages.reward import train_reward_model  # torch training: only when the experiment runs

    arm_cfg = with_overrides(cfg, {"reward_model.pooling": pooling, "run.output_dir": str(run_dir),
                                   "run.name": f"{cfg.run.name}-pooling-{pooling}"}, source=f"pooling arm {pooling}")
    trained = train_reward_model(arm_cfg)
    history = trained.history
    final = history[-1]
    n = int(final["n_pairs"])
    low, high = wilson_interval(final["accuracy"] * n, n)
    return {"accuracy": final["accuracy"], "ci": [low, high], "n_eval_pairs": n,
            "kendall_tau": final["kendall_tau"], "margin_mean": final["margin_mean"],
            "accuracy_per_epoch": [h["accuracy"] for h in history], "run_dir": str(run_dir),
            "eval_held_out": trained.eval_held_out,
            "held_out": held_out_margins(arm_cfg, trained)}


def held_out_margins(cfg: RLHFConfig, trained: RewardTrainResult) -> list[dict]:
    """Each decisive held-out pair the RM stage evaluated, in file order: its texts and the trained RM's
    margin (score of the preferred response minus the other's; > 0 = ranked as the annotator did)."""
    import torch

    from rlhf_dist.data import collate_pairs
    from rlhf_dist.data.files import hold_out, read_pairs
    from rlhf_dist.data.tokenize import OverlongError, encode_pair
    from rlhf_dist.models import load_reward_model, load_tokenizer
    from rlhf_dist.stages.reward import score_pairs

    d = cfg.data
    pairs, _ = read_pairs(cfg, trained.eval_pairs, trained.eval_pairs_format)
    tokenizer = load_tokenizer(trained.model_dir, cfg.reward_model.trust_remote_code)
    model = load_reward_model(cfg.reward_model, trained.model_dir)
    kept, encoded = [], []
    for pair in pairs:
        try:
            encoded.append(encode_pair(tokenizer, pair, d.max_length, d.truncation))
        except OverlongError:  # the RM stage skipped it too
            continue
        kept.append(pair)
    if trained.eval_held_out:  # the RM stage evaluated on the pairs it held out of the training file
        kept, encoded = hold_out(kept)[1], hold_out(encoded)[1]
    margins: list[float] = []
    with torch.no_grad():  # batches of 32 as the RM stage's eval: the same scores, bit for bit
        for i in range(0, len(encoded), 32):
            chosen, rejected = score_pairs(model, collate_pairs(encoded[i : i + 32], tokenizer.pad_token_id))
            margins += (chosen - rejected).tolist()
    return [{"prompt": p.prompt, "preferred": p.chosen if p.target > 0.5 else p.rejected,
             "other": p.rejected if p.target > 0.5 else p.chosen, "margin": m if p.target > 0.5 else -m}
            for p, m in zip(kept, margins) if p.target != 0.5]


def compare_on_same_pairs(last: list[dict], mean: list[dict], n_examples: int = 6) -> tuple[dict, list[dict]]:
    """Exact McNemar test of last vs mean pooling on the held-out pairs both scored, and example pairs:
    those the two poolings disagree on first (the most confident disagreements), then agreements."""
    if [r["preferred"] for r in last] != [r["preferred"] for r in mean]:
        raise ValueError("pooling arms scored different held-out pairs")
    from rlhf_dist.algo.agreement import paired_accuracy_test  # rlhf_dist.algo imports torch: not at CLI start

    test = paired_accuracy_test([r["margin"] > 0 for r in last], [r["margin"] > 0 for r in mean])
    paired = {"n_pairs": len(last), "both_right": test["both_right"], "last_only": test["a_only"],
              "mean_only": test["b_only"], "both_wrong": test["both_wrong"], "p_value": test["p_value"]}
    rows = [{**{k: a[k] for k in ("prompt", "preferred", "other")}, "margin_last": a["margin"],
             "margin_mean": b["margin"]} for a, b in zip(last, mean)]
    rows.sort(key=lambda r: ((r["margin_last"] > 0) == (r["margin_mean"] > 0),
                             -abs(r["margin_last"] - r["margin_mean"])))
    return paired, rows[:n_examples]


def plot_pooling(result: dict, path: Path) -> Path:
    fig, (ax_bar, ax_ep) = new_figure(2, f"reward-model pooling ({result['backbone']})")
    for i, pooling in enumerate(POOLINGS):
        arm = result[pooling]
        acc, (low, high) = arm["accuracy"], arm["ci"]
        ax_bar.bar(i, acc, yerr=[[acc - low], [high - acc]], capsize=6, color=f"C{i}", label=pooling)
        epochs = range(1, len(arm["accuracy_per_epoch"]) + 1)
        ax_ep.plot(list(epochs), arm["accuracy_per_epoch"], marker="o", color=f"C{i}", label=pooling)
    ax_bar.set_xticks(range(len(POOLINGS)), [f"{p} pooling" for p in POOLINGS])
    ax_bar.set_ylabel("held-out pairwise accuracy\n(fraction, 95% Wilson CI)")
    ax_bar.set_ylim(0, 1.05)
    paired = result["paired"]
    ax_bar.set_xlabel(f"on the same {paired['n_pairs']} pairs: only last right {paired['last_only']}, only mean "
                      f"right {paired['mean_only']}\n(exact McNemar p = {paired['p_value']:.2f})", fontsize=9)
    ax_ep.set_xticks(range(1, len(result[POOLINGS[0]]["accuracy_per_epoch"]) + 1))  # whole epochs only
    ax_ep.set_xlabel("reward-model epoch")
    ax_ep.set_ylabel("held-out pairwise accuracy (fraction)")
    for ax in (ax_bar, ax_ep):
        ax.grid(alpha=0.3, axis="y")
    ax_ep.legend(fontsize=8)
    return save_figure(fig, path)


def pooling_experiment(cfg: RLHFConfig, out_dir: str | Path, runs_dir: str | Path | None = None,
                       command: str | None = None, pairs: str = "policy") -> Path:
    """Train the RM with last and with mean pooling on the same pairs; writes <out_dir>/pooling.{json,png}.

    `pairs`: "policy" samples them from the starting policy (policy_pairs) unless data.pairs_path is set;
    "builtin" uses the built-in (or the user's) pairs as they are."""
    from rlhf_dist.stages.inputs import check_inputs

    out = Path(out_dir)
    runs_root = Path(runs_dir) if runs_dir else Path(cfg.run.output_dir) / "pooling"
    base_cfg, source = cfg, "given" if cfg.data.pairs_path is not None else pairs  # the user's own pairs win
    # every model and data file the arms read, checked before pairs are sampled or anything is written
    check_inputs(cfg, ["reward_model.path", *(["policy.path"] if source == "policy" else [])],
                 ["prompts", "eval_prompts", "pairs", "eval_pairs"])
    if source == "policy":
        cfg = with_overrides(cfg, policy_pairs(cfg, runs_root), source="pooling pairs sampled from the policy")
    result: dict = {"experiment": "pooling", "backbone": cfg.reward_model.path}
    for pooling in POOLINGS:
        result[pooling] = _arm(cfg, pooling, runs_root / pooling)
    held_out = [result[p].pop("eval_held_out") for p in POOLINGS][0]  # the RM stage held some user pairs out
    result["pairs"] = {"source": source,
                       "train": cfg.data.pairs_path or f"built-in demo pairs (data.demo_size {cfg.data.demo_size})",
                       "eval": cfg.data.eval_pairs_path or (f"every 10th pair of {cfg.data.pairs_path}, held out"
                                                            if held_out else "built-in held-out demo pairs"),
                       "format": cfg.data.pairs_format, "n_eval": result["last"]["n_eval_pairs"]}
    result["difference_mean_minus_last"] = result["mean"]["accuracy"] - result["last"]["accuracy"]
    result["paired"], result["examples"] = compare_on_same_pairs(result["last"].pop("held_out"),
                                                                 result["mean"].pop("held_out"))
    result["reproduce"] = provenance(base_cfg, command)
    plot_pooling(result, out / "pooling.png")
    write_json(out / "pooling.json", result)
    return out
