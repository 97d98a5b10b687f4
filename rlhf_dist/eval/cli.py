"""`rlhf-dist eval`, `rlhf-dist report` and `rlhf-dist experiment kl-sweep` (hooked into rlhf_dist/cli.py).

    rlhf-dist eval --config configs/tiny.yaml                 # <run>/policy vs the starting policy
    rlhf-dist report --config configs/tiny.yaml               # <run>/report/{*.png, report.md, report.html}
    rlhf-dist report --run-dir s3://bucket/runs/x             # a run behind a storage URI: report sent back there
    rlhf-dist experiment kl-sweep --config configs/tiny.yaml --coefs 0,0.001,0.02,0.5
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from rlhf_dist.config import RLHFConfig

LoadCfg = Callable[[argparse.Namespace, list[str]], RLHFConfig]


def _parse_coefs(text: str) -> list[float]:
    try:
        coefs = [float(c) for c in text.split(",") if c.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--coefs wants comma-separated numbers, got '{text}'") from None
    if not coefs or any(c < 0 for c in coefs):
        raise argparse.ArgumentTypeError(f"--coefs wants one or more KL coefficients >= 0, got '{text}'")
    return coefs


def _fail(message: str, code: int = 1) -> int:
    print(f"rlhf-dist: {message}", file=sys.stderr)
    return code


def _storage_guarded(command: str, handler: Callable[..., int]) -> Callable[..., int]:
    """A run URI that holds no run or cannot be reached: one line, exit 2 (as `rlhf-dist pull`)."""
    def run(*args) -> int:
        from rlhf_dist.storage import StorageError

        try:
            return handler(*args)
        except StorageError as err:
            return _fail(f"{command}: {err}", 2)
    return run


def _default_reward_dir(run_dir: Path) -> Path | None:
    from rlhf_dist.models.scalar_head import HEAD_META

    path = run_dir / "reward_model"
    return path if (path / HEAD_META).is_file() else None


def cmd_human_eval(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    """--human: create a blind evaluation campaign, or (--report CAMPAIGN) compute its win rate."""
    from rlhf_dist.eval.human import create_human_eval_campaign, human_eval_report
    from rlhf_dist.feedback.db import db_url_of, open_database
    from rlhf_dist.feedback.queue import FeedbackError
    from rlhf_dist.models import resolve_model_path

    run_dir = Path(cfg.run.output_dir)
    try:
        sessions = open_database(db_url_of(cfg.feedback.db_url, run_dir))
        if args.report:
            report = human_eval_report(sessions, args.report, seed=cfg.eval.seed)
            print(json.dumps(report, indent=2))
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "human_evaluation.json").write_text(json.dumps(report, indent=2) + "\n")
            print(f"win rate {report['win_rate']:.3f} (95% CI {report['ci_low']:.3f}-{report['ci_high']:.3f}, "
                  f"{report['votes']} votes); seed target > {report['target']:.2f}: "
                  f"{'met' if report['meets_target'] else 'not met'}; saved to {run_dir / 'human_evaluation.json'}")
            return 0
        policy = Path(args.policy) if args.policy else run_dir / "policy"
        baseline = Path(args.baseline) if args.baseline else resolve_model_path(cfg.policy.path, seed=cfg.run.seed)
        for flag, path in (("--policy", policy), ("--baseline", baseline)):
            if not (path / "config.json").is_file():
                return _fail(f"eval --human: {flag}: no model at {path}")
        campaign = args.campaign or f"{cfg.run.name}-human-eval"
        n = create_human_eval_campaign(cfg, sessions, campaign, policy, baseline,
                                       cfg.feedback.human_eval_prompts or cfg.eval.num_prompts)
    except FeedbackError as err:
        return _fail(f"eval --human: --{'report' if args.report else 'campaign'}: {err.message}")
    print(f"evaluation campaign {campaign!r}: {n} blind pairs (policy vs baseline, sides shuffled per annotator). "
          f"Serve it with `rlhf-dist feedback serve`, annotators open /?campaign={campaign}; then "
          f"`rlhf-dist eval --human --report {campaign}`.")
    return 0


def cmd_eval(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    from rlhf_dist.config import with_overrides
    from rlhf_dist.eval.evaluate import evaluate_policy
    from rlhf_dist.eval.report import INPUTS, write_report
    from rlhf_dist.models import resolve_model_path
    from rlhf_dist.storage import fetch_run, push_outputs

    # a run behind a URI: what this eval reads comes down to its staging dir; eval.json and report/ go back
    needed = ["policy"] * (not args.policy) + ["reward_model"] * (not (args.reward_model or args.no_reward_model))
    run_dir = fetch_run(cfg.run.output_dir, needed + INPUTS)
    cfg = with_overrides(cfg, {"run.output_dir": str(run_dir)})
    policy = Path(args.policy) if args.policy else run_dir / "policy"
    if not (policy / "config.json").is_file():
        return _fail(f"eval: no policy at {policy} (run `rlhf-dist ppo` first, or pass --policy DIR)")
    reference = Path(args.reference) if args.reference else resolve_model_path(cfg.policy.path, seed=cfg.run.seed)
    reward = None if args.no_reward_model else (Path(args.reward_model) if args.reward_model
                                                 else _default_reward_dir(run_dir))
    result = evaluate_policy(cfg, policy, reference, reward, cfg.eval.judge)
    print(json.dumps(result, indent=2, default=float))
    if not args.no_report:
        print(f"report written to {write_report(run_dir)}")
    push_outputs(run_dir)  # a staged run: eval.json, metrics.jsonl and report/ go back to its URI
    return 0


def cmd_report(args: argparse.Namespace, cfg: RLHFConfig | None) -> int:
    from rlhf_dist.eval.report import write_report
    from rlhf_dist.storage import is_uri, local_path

    run = args.run_dir or cfg.run.output_dir
    if not is_uri(run) and not local_path(run).is_dir():
        return _fail(f"report: no run directory {run}", 2)
    out = write_report(run)
    plots = f"(and report.html, {len(list(out.glob('*.png')))} plots)"
    if is_uri(run):
        print(f"report written to {run.rstrip('/')}/report/report.md {plots}; local copy in {out}")
    else:
        print(f"report written to {out / 'report.md'} {plots}")
    return 0


def cmd_kl_sweep(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    from rlhf_dist.eval.experiments import reward_hacking_experiment

    out = Path(args.out) if args.out else Path(cfg.run.output_dir) / "kl_sweep"
    out = reward_hacking_experiment(cfg, out, args.coefs)
    for run in json.loads((out / "kl_sweep.json").read_text())["runs"]:
        print(f"kl {run['kl_coef']:<8g} final reward {run['final_reward']:.4f}  final KL {run['final_kl']:.4f}")
    print(f"curves: {out / 'kl_sweep.png'}; per-run reports under {out}/kl_*/report")
    return 0


def cmd_active_selection(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    from rlhf_dist.eval.active_selection import active_selection_experiment

    for flag, value in (("--seeds", args.seeds), ("--budget", args.budget), ("--batch", args.batch)):
        if value < 1:
            return _fail(f"experiment active-selection: {flag}: must be >= 1, got {value}")
    result = active_selection_experiment(cfg, Path(args.out), args.backbone, args.seeds, budget=args.budget,
                                         batch=args.batch)
    for name, s in result["strategies"].items():
        print(f"{name:<13} votes to {result['target_accuracy']:.3f}: {s['votes_to_target']}  "
              f"accuracy after {args.budget}: {s['final_accuracy']:.3f}")
    print(f"uncertainty / random votes: {result['uncertainty_vs_random_votes']} (goal <= 0.7); "
          f"wrote {Path(args.out) / 'active_selection.json'} and .png")
    return 0


def register(sub, handlers: dict[str, Callable], add_config_arg: Callable[..., None],
             load_cfg: LoadCfg) -> None:
    """Add the eval / report / experiment subcommands to rlhf-dist's subparsers."""
    p = sub.add_parser("eval", help="held-out eval: reward, KL, perplexity, win rate vs the starting policy",
                       description="Held-out evaluation of <run>/policy against the starting policy: RM reward, "
                       "KL, perplexity, judge win rate; written to <run>/eval.json and the report.")
    add_config_arg(p, ["eval.judge", "eval.num_prompts", "eval.seed", "data.eval_prompts_path", "run.output_dir"])
    p.add_argument("--policy", help="policy HF dir (default <run>/policy)")
    p.add_argument("--reference", help="starting policy HF dir (default: the resolved policy.path; pass <run>/sft "
                   "when PPO started from the SFT model)")
    p.add_argument("--reward-model", help="trained reward model dir (default <run>/reward_model when present)")
    p.add_argument("--no-reward-model", action="store_true", help="skip RM reward and RM accuracy")
    p.add_argument("--no-report", action="store_true", help="do not (re)write <run>/report afterwards")
    p.add_argument("--human", action="store_true", help="human evaluation: create a blind campaign of --policy "
                   "against --baseline on feedback.human_eval_prompts (else eval.num_prompts) held-out prompts")
    p.add_argument("--baseline", help="with --human: the model to beat (default: the resolved policy.path)")
    p.add_argument("--campaign", help="with --human: the new campaign's name (default <run.name>-human-eval)")
    p.add_argument("--report", metavar="CAMPAIGN", help="with --human: win rate (ties half), bootstrap 95%% CI and "
                   "vote count of an evaluation campaign; saved to <run>/human_evaluation.json")
    handlers["eval"] = lambda args, extra: (cmd_human_eval if args.human else _storage_guarded("eval", cmd_eval))(
        args, load_cfg(args, extra))

    p = sub.add_parser("report", help="plots + Markdown/HTML summary of a run into <run>/report",
                       description="Plots and a Markdown/HTML summary of a finished (or partial) run, written to "
                       "<run>/report; the run is --run-dir, else run.output_dir of the config.")
    add_config_arg(p, ["run.output_dir"])
    p.add_argument("--run-dir", help="run directory (default: run.output_dir of the config)")
    handlers["report"] = lambda args, extra: _storage_guarded("report", cmd_report)(
        args, None if args.run_dir and not extra and not args.config else load_cfg(args, extra))

    p = sub.add_parser("experiment", help="seed experiments (kl-sweep: reward hacking vs the KL penalty)")
    kinds = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    k = kinds.add_parser("kl-sweep", help="length-rewarded PPO once per KL coefficient; reward and KL curves",
                         description="Length-rewarded PPO once per KL coefficient; reward and KL curves.")
    add_config_arg(k, ["ppo.steps", "ppo.rollout_batch_size", "policy.path", "run.output_dir"])
    k.add_argument("--coefs", type=_parse_coefs, default=[0.0, 0.001, 0.02, 0.5],
                   help="comma-separated KL coefficients (default 0,0.001,0.02,0.5; 0 = no KL penalty)")
    k.add_argument("--out", help="output directory (default <run>/kl_sweep)")
    k = kinds.add_parser("active-selection", help="held-out RM accuracy vs votes for random / uncertainty / "
                         "disagreement selection, with simulated annotators")
    add_config_arg(k, ["feedback.simulated.rule", "feedback.simulated.noise", "data.demo_size", "run.seed"])
    k.add_argument("--backbone", default="builtin:minilm-l6", help="frozen reward-model encoder (default MiniLM-L6)")
    k.add_argument("--seeds", type=int, default=5, help="repeats averaged per strategy (default 5)")
    k.add_argument("--budget", type=int, default=600, help="votes per run (default 600)")
    k.add_argument("--batch", type=int, default=20, help="votes between two refits (default 20)")
    k.add_argument("--out", default="bench/results", help="where active_selection.json/.png go (default bench/results)")
    handlers["experiment"] = lambda args, extra: (cmd_active_selection if args.experiment == "active-selection"
                                                  else cmd_kl_sweep)(args, load_cfg(args, extra))
