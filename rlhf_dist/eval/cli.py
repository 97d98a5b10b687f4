"""`rlhf-dist eval`, `rlhf-dist report` and `rlhf-dist experiment ...` (hooked into rlhf_dist/cli.py).

    rlhf-dist eval --config configs/tiny.yaml                 # <run>/policy vs the starting policy
    rlhf-dist report --config configs/tiny.yaml               # <run>/report/{*.png, report.md, report.html}
    rlhf-dist report --run-dir s3://bucket/runs/x             # a run behind a storage URI: report sent back there
    rlhf-dist experiment pooling | length-hacking | multi-objective | kl-sweep   # SmolLM2 preset by default
    rlhf-dist experiment kl-sweep --config configs/tiny.yaml --coefs 0,0.5 --out /tmp/sweep
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
        raise argparse.ArgumentTypeError(f"wants comma-separated KL coefficients, got '{text}'") from None
    if not coefs or any(not c >= 0 for c in coefs):  # `not >=`: nan is refused too
        raise argparse.ArgumentTypeError(f"wants one or more KL coefficients >= 0, got '{text}'")
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


def _given_reward_dir(path: str) -> Path:
    """--reward-model: a trained reward model (scalar_head.json beside the weights), else one line naming it."""
    from rlhf_dist.data.errors import DataFileNotFound
    from rlhf_dist.models import resolve_model_path
    from rlhf_dist.models.scalar_head import HEAD_META

    model_dir = resolve_model_path(path, option="--reward-model")
    if not (model_dir / HEAD_META).is_file():
        raise DataFileNotFound(f"--reward-model '{path}' is not a trained reward model (no {HEAD_META}; train one "
                               "with `rlhf-dist rm`)")
    return model_dir


def _empty_flag(args: argparse.Namespace, flags: tuple[str, ...]) -> str | None:
    """The first of these path options given as an empty string ('' would mean the working directory)."""
    return next((f for f in flags if (v := getattr(args, f[2:].replace("-", "_"))) is not None and not v.strip()),
                None)


def _human_eval_models(args: argparse.Namespace, cfg: RLHFConfig) -> tuple[Path, Path]:
    """--human's policy and baseline, and the held-out prompts, checked before the database is opened."""
    from rlhf_dist.models import resolve_model_path
    from rlhf_dist.stages.inputs import check_inputs

    policy = resolve_model_path(args.policy, option="--policy") if args.policy else Path(cfg.run.output_dir) / "policy"
    baseline = resolve_model_path(args.baseline or cfg.policy.path, seed=cfg.run.seed,
                                  option="--baseline" if args.baseline else "policy.path")
    if not (policy / "config.json").is_file():
        from rlhf_dist.data.errors import DataFileNotFound

        raise DataFileNotFound(f"eval --human: no policy at {policy} (run `rlhf-dist ppo` first, or pass --policy DIR)")
    check_inputs(cfg, splits=["eval_prompts"])
    return policy, baseline


def cmd_human_eval(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    """--human: create a blind evaluation campaign, or (--report CAMPAIGN) compute its win rate."""
    from rlhf_dist.eval.human import create_human_eval_campaign, human_eval_report
    from rlhf_dist.feedback.db import db_url_of, open_database
    from rlhf_dist.feedback.queue import FeedbackError

    if flag := _empty_flag(args, ("--policy", "--baseline", "--campaign", "--report")):
        return _fail(f"eval --human: {flag}: empty value", 2)
    run_dir = Path(cfg.run.output_dir)
    policy, baseline = _human_eval_models(args, cfg) if not args.report else (None, None)
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

    if flag := _empty_flag(args, ("--policy", "--reference", "--reward-model")):
        return _fail(f"eval: {flag}: empty path (give a model directory, or leave {flag} out for its default)", 2)
    # a run behind a URI: what this eval reads comes down to its staging dir; eval.json and report/ go back
    needed = ["policy"] * (not args.policy) + ["reward_model"] * (not (args.reward_model or args.no_reward_model))
    run_dir = fetch_run(cfg.run.output_dir, needed + INPUTS)
    cfg = with_overrides(cfg, {"run.output_dir": str(run_dir)})
    policy = Path(args.policy) if args.policy else run_dir / "policy"
    if not (policy / "config.json").is_file():
        return _fail(f"eval: no policy at {policy} (run `rlhf-dist ppo` first, or pass --policy DIR)")
    reference = resolve_model_path(args.reference or cfg.policy.path, seed=cfg.run.seed,
                                   option="--reference" if args.reference else "policy.path")
    reward = None if args.no_reward_model else (_given_reward_dir(args.reward_model) if args.reward_model
                                                 else _default_reward_dir(run_dir))
    from rlhf_dist.stages.inputs import check_inputs

    # the held-out prompts (and pairs, for the RM's accuracy) read and checked before eval writes anything
    check_inputs(cfg, splits=["eval_prompts", *(["eval_pairs"] if reward else [])],
                 dirs={"reward_model.path": reward} if reward else None)
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


EXPERIMENTS = {  # CLI name -> (JSON/PNG base name, what --help says it shows)
    "pooling": ("pooling", "reward model with last-token vs mean pooling on the same pairs: held-out accuracy "
                "with its 95% Wilson CI (seed claim: the pooling choice changes preference accuracy)"),
    "length-hacking": ("length_hacking", "PPO rewarded only by len(response)/100 at KL coef 0 and 0.1: reward, "
                       "KL and response length per step, start vs end generations (seed claim: without a KL "
                       "penalty the policy writes ever longer, repetitive text; 0.1 prevents it)"),
    "multi-objective": ("multi_objective", "PPO on R_helpful alone, R_concise alone and 0.7 R_helpful + 0.3 "
                        "R_concise: held-out helpfulness (rule judge) and length of each policy (seed claim: the "
                        "combination is helpful and concise, avoiding the verbosity trap)"),
    "kl-sweep": ("kl_sweep", "the length-reward PPO at KL coef 0.001 / 0.02 / 0.5: reward and KL curves (seed "
                 "claim: 0.001 hacks, 0.02 learns with bounded KL, 0.5 barely learns)"),
}
PRESET_NOTE = ("the embedded preset rlhf_dist/config/presets/experiments.yaml: SmolLM2-135M-Instruct policy (LoRA) "
               "and reward model, 128 new tokens with EOS respected, one-sentence prompts, 20 PPO steps per arm, "
               "outputs in runs/experiments (about 15 min an arm on a 2-core CPU: docs/experiments/README.md)")


def experiments_config(overrides: list[str] | None = None) -> RLHFConfig:
    from importlib import resources

    from rlhf_dist.config import load_config

    preset = resources.files("rlhf_dist.config") / "presets" / "experiments.yaml"
    with resources.as_file(preset) as path:
        return load_config(path, overrides)


def _command_line(args: argparse.Namespace, extra: list[str]) -> str:
    """The command that reproduces this run (recorded in the experiment's JSON)."""
    parts = ["rlhf-dist", "experiment", args.experiment]
    parts += ["--config", args.config] if args.config else []
    parts += [*extra, *(["--coefs", ",".join(f"{c:g}" for c in args.coefs)] if "coefs" in args else [])]
    parts += [*(["--helpful", args.helpful] if "helpful" in args else []), *(["--pairs", args.pairs] if "pairs" in args
                                                                              else [])]
    parts += ["--out", args.out] if args.out else []
    return " ".join(parts)


def cmd_experiment(args: argparse.Namespace, cfg: RLHFConfig, command: str) -> int:
    from rlhf_dist.eval import experiments as ex

    name = EXPERIMENTS[args.experiment][0]
    out = Path(args.out) if args.out else Path(cfg.run.output_dir)
    if args.experiment == "pooling":
        ex.pooling_experiment(cfg, out, command=command, pairs=args.pairs)
        result = json.loads((out / "pooling.json").read_text())
        for pooling in ("last", "mean"):
            arm = result[pooling]
            print(f"{pooling:<5} pooling: held-out accuracy {arm['accuracy']:.3f} (95% CI {arm['ci'][0]:.3f}-"
                  f"{arm['ci'][1]:.3f}, {arm['n_eval_pairs']} pairs)")
        paired = result["paired"]
        print(f"same pairs: last right & mean wrong {paired['last_only']}, mean right & last wrong "
              f"{paired['mean_only']} (exact McNemar p = {paired['p_value']:.3f})")
    elif args.experiment == "multi-objective":
        ex.multi_objective_experiment(cfg, out, args.helpful, command=command)
        for arm, p in json.loads((out / "multi_objective.json").read_text())["policies"].items():
            print(f"{arm:<9} helpfulness {p['helpfulness']:.3f} (start {p['helpfulness_start']:.3f})  length "
                  f"{p['response_length']:.1f} tokens (start {p['response_length_start']:.1f})")
    else:
        ex.reward_hacking_experiment(cfg, out, args.coefs, name=name, command=command)
        for run in json.loads((out / f"{name}.json").read_text())["runs"]:
            print(f"kl {run['kl_coef']:<6g} final reward {run['final_reward']:.4f}  final KL {run['final_kl']:.4f}  "
                  f"final length {run['final_response_length']:.1f} tokens")
    print(f"wrote {out / (name + '.json')} and {out / (name + '.png')}; arm runs under "
          f"{Path(cfg.run.output_dir) / name}")
    return 0


def _run_experiment(args: argparse.Namespace, extra: list[str], load_cfg: LoadCfg) -> int:
    from rlhf_dist.config.cli_args import split_overrides

    cfg = load_cfg(args, extra) if args.config else experiments_config(split_overrides(extra))
    return cmd_experiment(args, cfg, _command_line(args, extra))


def _one_line_error(parser: argparse.ArgumentParser) -> None:
    """A bad experiment name or option value: one line naming it, exit 2 (no usage block)."""
    parser.error = lambda message: parser.exit(2, f"{parser.prog}: {message}\n")  # type: ignore[method-assign]


def _register_experiments(kinds, add_config_arg: Callable[..., None]) -> None:
    from rlhf_dist.eval.experiments import KL_SWEEP_COEFS, LENGTH_HACKING_COEFS
    from rlhf_dist.eval.experiments.multi_objective import HELPFUL_RULE
    from rlhf_dist.eval.experiments.pooling import PAIR_SOURCES

    preset = experiments_config()
    keys = ["ppo.steps", "rollout.sampling.max_new_tokens", "policy.path", "run.output_dir"]
    for kind, (name, claim) in EXPERIMENTS.items():
        k = kinds.add_parser(kind, help=claim.split(" (seed claim")[0].replace("%", "%%"),  # help is %-formatted
                             description=claim[0].upper() + claim[1:] + ".")
        _one_line_error(k)
        add_config_arg(k, (["reward.epochs", "reward_model.path", "data.demo_size", "run.output_dir"]
                           if kind == "pooling" else keys), cfg=preset, defaults=PRESET_NOTE)
        k.add_argument("--out", help=f"where {name}.json and {name}.png go (default: run.output_dir; the committed "
                       "results live in docs/experiments)")
        if kind in ("length-hacking", "kl-sweep"):
            default = LENGTH_HACKING_COEFS if kind == "length-hacking" else KL_SWEEP_COEFS
            k.add_argument("--coefs", type=_parse_coefs, default=list(default), help="comma-separated fixed KL "
                           f"coefficients, one PPO arm each (default {','.join(f'{c:g}' for c in default)}; 0 = no "
                           "KL penalty)")
        if kind == "pooling":
            k.add_argument("--pairs", choices=PAIR_SOURCES, default=PAIR_SOURCES[0], help="'policy' (default): two "
                           "samples per prompt from the starting policy (policy.path), labelled by the simulated "
                           "annotator (feedback.simulated); 'builtin': the built-in phrase-bank pairs, which "
                           "SmolLM2 separates perfectly after one epoch; --data.pairs_path uses your own")
        if kind == "multi-objective":
            k.add_argument("--helpful", default=HELPFUL_RULE, help="R_helpful: 'model' (the trained reward model at "
                           "reward_model.path, trained first when none is there) or a 'module:callable' reward "
                           f"(default {HELPFUL_RULE}, the positivity rule standing in for a helpfulness RM)")


def cmd_active_selection(args: argparse.Namespace, cfg: RLHFConfig) -> int:
    from rlhf_dist.eval.experiments.active_selection import active_selection_experiment

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

    p = sub.add_parser("experiment", help="the seed experiments: pooling, length-hacking, multi-objective, kl-sweep "
                       "(and active-selection)", description="The seed's experiments; each writes <out>/<name>.json "
                       "and <name>.png. Write-ups: docs/experiments/README.md.")
    _one_line_error(p)
    kinds = p.add_subparsers(dest="experiment", required=True, metavar="EXPERIMENT")
    _register_experiments(kinds, add_config_arg)
    k = kinds.add_parser("active-selection", help="held-out RM accuracy vs votes for random / uncertainty / "
                         "disagreement selection, with simulated annotators")
    add_config_arg(k, ["feedback.simulated.rule", "feedback.simulated.noise", "data.demo_size", "run.seed"])
    k.add_argument("--backbone", default="builtin:minilm-l6", help="frozen reward-model encoder (default MiniLM-L6)")
    k.add_argument("--seeds", type=int, default=5, help="repeats averaged per strategy (default 5)")
    k.add_argument("--budget", type=int, default=600, help="votes per run (default 600)")
    k.add_argument("--batch", type=int, default=20, help="votes between two refits (default 20)")
    k.add_argument("--out", default="bench/results", help="where active_selection.json/.png go (default bench/results)")
    handlers["experiment"] = lambda args, extra: (
        cmd_active_selection(args, load_cfg(args, extra)) if args.experiment == "active-selection"
        else _run_experiment(args, extra, load_cfg))
