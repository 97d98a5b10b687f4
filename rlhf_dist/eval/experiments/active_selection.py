"""Experiment: which pairs should people judge? Held-out RM accuracy against the number of votes.

    rlhf-dist experiment active-selection -c configs/tiny.yaml [--seeds 5] [--budget 600] [--batch 20]

Simulated annotators judge by a rule the reward model never sees (the sentiment lexicon, with
label noise). The reward model is a frozen encoder (all-MiniLM-L6-v2 by default) with a linear
Bradley-Terry head: the head is refit after every batch of votes, exactly as feedback.selection
ranks pairs in the service (rlhf_dist/algo/selection.py). Each strategy starts from the same
random votes and then picks the next batch from an unlabelled pool:
  random        a uniform draw;
  uncertainty   the pairs whose P(A > B) under the current head is nearest 0.5;
  disagreement  the pairs on which 5 bootstrap-fit heads disagree most.
votes_to_target is the first vote count whose accuracy (mean over seeds) reaches target_accuracy
= 0.95 x the accuracy of a head fit on every pool pair (the ceiling of this reward model).
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import torch

from rlhf_dist.algo.selection import disagreement_rank, ensemble_probabilities, fit_bt_heads, uncertainty_rank
from rlhf_dist.config import RLHFConfig
from rlhf_dist.data.demo import MILD_NEGATIVE, MILD_POSITIVE, NEGATIVE, POSITIVE, _prompt, _response, sentiment_score
from rlhf_dist.utils import write_json

log = logging.getLogger(__name__)
STRATEGIES = ("random", "uncertainty", "disagreement")
BANKS = (POSITIVE, NEGATIVE, MILD_POSITIVE, MILD_NEGATIVE)
CEILING_FRACTION = 0.95


def make_pool(n: int, seed: int) -> list[tuple[str, str, str]]:
    """(prompt, response A, response B) with responses from any tone bank; pairs the rule calls a tie are left out."""
    rng = random.Random(seed)
    pool = []
    while len(pool) < n:
        topic, prompt = _prompt(rng, "train")
        a, b = _response(rng, rng.choice(BANKS), topic), _response(rng, rng.choice(BANKS), topic)
        if sentiment_score(a) != sentiment_score(b):
            pool.append((prompt, a, b))
    return pool


def features(backbone: str, rows: list[tuple[str, str, str]], max_length: int) -> torch.Tensor:
    """[N, H] feature differences f(prompt, A) - f(prompt, B) from the frozen encoder."""
    from rlhf_dist.config.schema_parts import RewardModelConfig
    from rlhf_dist.models import load_reward_model, load_tokenizer, resolve_model_path
    from rlhf_dist.models.reward_scoring import pooled_features

    model_dir = resolve_model_path(backbone)
    model = load_reward_model(RewardModelConfig(path=backbone, pooling="mean"), None, trainable=False).eval()
    tokenizer = load_tokenizer(model_dir)
    prompts = [r[0] for r in rows]
    return (pooled_features(model, tokenizer, prompts, [r[1] for r in rows], max_length, batch_size=64)
            - pooled_features(model, tokenizer, prompts, [r[2] for r in rows], max_length, batch_size=64))


def accuracy(heads: torch.Tensor, diff: torch.Tensor, truth: torch.Tensor) -> float:
    p = ensemble_probabilities(heads, diff).mean(dim=0)
    return float(((p > 0.5).float() == truth).float().mean())


def run_strategy(strategy: str, pool: torch.Tensor, votes: torch.Tensor, test: torch.Tensor, truth: torch.Tensor,
                 seed: int, start: int, batch: int, budget: int) -> list[tuple[int, float]]:
    """(votes so far, held-out accuracy) after every batch."""
    rng = random.Random(seed)
    labelled = rng.sample(range(len(pool)), start)
    curve = []
    while True:
        rows = torch.tensor(labelled)
        heads = fit_bt_heads(pool[rows], votes[rows], n_heads=5 if strategy == "disagreement" else 1,
                             seed=seed, bootstrap=strategy == "disagreement")
        curve.append((len(labelled), accuracy(heads, test, truth)))
        if len(labelled) >= budget:
            return curve
        taken = set(labelled)
        free = [i for i in range(len(pool)) if i not in taken]
        if strategy == "random":
            labelled += rng.sample(free, batch)
            continue
        candidates = pool[torch.tensor(free)]
        rank = (disagreement_rank(heads, candidates) if strategy == "disagreement"
                else uncertainty_rank(ensemble_probabilities(heads, candidates).mean(dim=0)))
        labelled += [free[i] for i in rank.argsort()[:batch].tolist()]


def votes_to_reach(curve: list[tuple[int, float]], target: float) -> int | None:
    return next((n for n, acc in curve if acc >= target), None)


def active_selection_experiment(cfg: RLHFConfig, out_dir: Path, backbone: str = "builtin:minilm-l6", seeds: int = 5,
                                pool_size: int = 1500, test_size: int = 400, start: int = 20, batch: int = 20,
                                budget: int = 600, noise: float = 0.1) -> dict:
    pool_rows, test_rows = make_pool(pool_size, cfg.run.seed), make_pool(test_size, cfg.run.seed + 10_000)
    log.info("encoding %d pool and %d held-out pairs with %s", pool_size, test_size, backbone)
    pool, test = features(backbone, pool_rows, cfg.data.max_length), features(backbone, test_rows, cfg.data.max_length)
    scale = pool.std(dim=0).clamp(min=1e-6)
    pool, test = pool / scale, test / scale
    truth = torch.tensor([float(sentiment_score(a) > sentiment_score(b)) for _p, a, b in test_rows])
    clean = torch.tensor([float(sentiment_score(a) > sentiment_score(b)) for _p, a, b in pool_rows])
    flips = torch.rand(len(pool_rows), generator=torch.Generator().manual_seed(cfg.run.seed)) < noise
    votes = torch.where(flips, 1 - clean, clean)  # what noisy annotators say
    ceiling = accuracy(fit_bt_heads(pool, votes, 1, seed=0, bootstrap=False), test, truth)
    target = round(CEILING_FRACTION * ceiling, 4)
    result = {"target_accuracy": target, "ceiling_accuracy": round(ceiling, 4), "backbone": backbone,
              "rule": "sentiment", "annotator_noise": noise, "seeds": seeds, "pool": pool_size, "test": test_size,
              "start_votes": start, "batch": batch, "budget": budget, "strategies": {}}
    for strategy in STRATEGIES:
        curves = [run_strategy(strategy, pool, votes, test, truth, s, start, batch, budget) for s in range(seeds)]
        mean = [(n, sum(c[i][1] for c in curves) / seeds) for i, (n, _acc) in enumerate(curves[0])]
        result["strategies"][strategy] = {"votes_to_target": votes_to_reach(mean, target),
                                          "final_accuracy": round(mean[-1][1], 4),
                                          "curve": [{"votes": n, "accuracy": round(a, 4)} for n, a in mean]}
        log.info("%s: %s votes to %.3f; %.3f after %d", strategy, result["strategies"][strategy]["votes_to_target"],
                 target, mean[-1][1], budget)
    rand, unc = (result["strategies"][s]["votes_to_target"] for s in ("random", "uncertainty"))
    result["uncertainty_vs_random_votes"] = round(unc / rand, 3) if rand and unc else None
    result["goal_uncertainty_at_most_70pct_of_random"] = bool(rand and unc and unc <= 0.7 * rand)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_json(out_dir / "active_selection.json", result)
    plot(result, out_dir / "active_selection.png")
    return result


def plot(result: dict, path: Path) -> None:
    from matplotlib.figure import Figure  # no pyplot: no global backend is touched

    fig = Figure(figsize=(7, 4.2))
    ax = fig.subplots()
    for name, s in result["strategies"].items():
        ax.plot([p["votes"] for p in s["curve"]], [p["accuracy"] for p in s["curve"]], marker=".", label=(
            f"{name} ({s['votes_to_target']} votes to target)" if s["votes_to_target"] else f"{name} (target missed)"))
    ax.axhline(result["target_accuracy"], color="grey", ls=":", lw=1, label=f"target {result['target_accuracy']:.3f}")
    ax.set(xlabel="votes", ylabel="held-out RM accuracy",
           title=f"Active selection: mean of {result['seeds']} seeds, annotator noise {result['annotator_noise']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
