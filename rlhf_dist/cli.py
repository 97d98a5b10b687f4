"""`rlhf-dist` command line. Every option comes from the config schema:

    rlhf-dist rm --config configs/tiny.yaml --reward.epochs 3
    rlhf-dist config show --config configs/tiny.yaml --ppo.kl.coef 0.1
    rlhf-dist config schema --markdown > docs/config-reference.md

Overrides are dotted schema paths (`--section.key VALUE` or `--section.key=VALUE`),
validated with the file before anything starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from rlhf_dist.config import ConfigError, RLHFConfig, config_to_yaml, load_config, with_overrides
from rlhf_dist.config.cli_args import add_config_arg, claim_config, join_dotted_overrides, split_overrides
from rlhf_dist.data.validate import DataValidationError
from rlhf_dist.utils import EXIT_PREEMPTED, Preempted

EPILOG = (
    "Any option of the config schema can be overridden as --section.key VALUE "
    "(see `rlhf-dist config schema --markdown` or docs/config-reference.md)."
)
# The schema options each stage's --help lists (with their defaults); every other one works too.
STAGE_KEYS = {
    "sft": ["sft.epochs", "sft.train.lr", "sft.train.global_batch_size", "data.sft_path", "policy.path",
            "run.output_dir"],
    "rm": ["reward.epochs", "reward.train.lr", "data.pairs_path", "data.eval_pairs_path", "reward_model.path",
           "run.output_dir"],
    "ppo": ["ppo.steps", "ppo.rollout_batch_size", "ppo.advantage", "ppo.kl.coef", "ppo.entropy_coef",
            "rollout.num_engines", "policy.path", "cluster.device", "run.output_dir"],
    "dpo": ["dpo.loss", "dpo.beta", "dpo.label_smoothing", "dpo.epochs", "dpo.train.lr", "data.pairs_path",
            "data.pairs_format", "policy.path", "run.output_dir"],
    "pipeline": ["pipeline.rounds", "pipeline.method", "pipeline.run_sft", "feedback.source", "reward.epochs",
                 "ppo.steps", "ppo.kl.coef", "dpo.loss", "eval.judge", "policy.path", "run.output_dir"],
}


def _load(args: argparse.Namespace, extra: list[str]) -> RLHFConfig:
    return load_config(args.config, split_overrides(extra))


def cmd_config(args: argparse.Namespace, extra: list[str]) -> int:
    if args.action == "schema":
        if args.markdown:
            from rlhf_dist.config.reference import markdown_reference

            print(markdown_reference(), end="")
        else:
            print(json.dumps(RLHFConfig.model_json_schema(), indent=2))
        return 0
    cfg = _load(args, extra)
    if args.action == "show":
        print(config_to_yaml(cfg), end="")
    else:
        print(f"config OK: {args.config or '<defaults>'}")
    return 0


def cmd_rm(args: argparse.Namespace, extra: list[str]) -> int:
    from rlhf_dist.stages.reward import train_reward_model

    result = train_reward_model(_load(args, extra))
    print(json.dumps(result.final_metrics, indent=2))
    return 0


def cmd_sft(args: argparse.Namespace, extra: list[str]) -> int:
    from rlhf_dist.stages.sft import train_sft

    result = train_sft(_load(args, extra))
    print(json.dumps(result.history[-1], indent=2))
    print(f"SFT model saved to {result.model_dir}")
    return 0


def _load_resumable(args: argparse.Namespace, extra: list[str]) -> RLHFConfig:
    """The config with `--resume [auto]` as checkpoint.resume (ppo, dpo)."""
    if args.resume not in (None, "auto", "require"):  # `--resume CONFIG`: argparse gave the file to --resume
        if args.config not in (None, args.resume):
            raise ConfigError([f"--resume: expected nothing or 'auto', got '{args.resume}'"])
        args.config, args.resume = args.resume, "require"
    cfg = _load(args, extra)
    if args.resume is not None:
        cfg = with_overrides(cfg, {"checkpoint.resume": True if args.resume == "require" else "auto"})
    return cfg


def cmd_ppo(args: argparse.Namespace, extra: list[str]) -> int:
    from rlhf_dist.stages.ppo import run_ppo_stage

    result = run_ppo_stage(_load_resumable(args, extra))
    # the per-step lines and the phase-timing table were printed by the driver (tracking/console.py)
    print(f"policy exported to {result.policy_dir}; metrics in {result.run_dir / 'metrics.jsonl'}")
    return 0


def cmd_dpo(args: argparse.Namespace, extra: list[str]) -> int:
    from rlhf_dist.stages.dpo import run_dpo_stage

    result = run_dpo_stage(_load_resumable(args, extra))
    print(json.dumps(result.history[-1] if result.history else {}, indent=2))
    print(f"policy exported to {result.policy_dir}; metrics in {result.run_dir / 'metrics.jsonl'}")
    return 0


def cmd_pipeline(args: argparse.Namespace, extra: list[str]) -> int:
    from rlhf_dist.stages.pipeline import run_pipeline

    summary = run_pipeline(_load(args, extra), fresh=args.fresh)
    print(json.dumps({k: v for k, v in summary.items() if k != "eval"}, indent=2, default=str))
    return 0


def cmd_demo(args: argparse.Namespace, extra: list[str]) -> int:
    """The embedded default job (what `make demo` runs)."""
    from rlhf_dist.stages.demo import run_demo

    from rlhf_dist.stages.demo import demo_config

    if args.config:
        return run_demo(_load(args, extra), fresh=args.fresh)
    return run_demo(demo_config(split_overrides(extra)), fresh=args.fresh)


def _add_global_options(parser: argparse.ArgumentParser, default: bool) -> None:
    unset = {} if default else {"default": argparse.SUPPRESS}
    parser.add_argument("--log-level", **({"default": "INFO"} if default else unset),
                        help="Python log level (default INFO).")
    parser.add_argument("--verbose", "-v", action="store_true", **unset,
                        help="show everything: worker and engine output, library warnings, DEBUG logs")
    parser.add_argument("--debug", action="store_true", **unset,
                        help="on a config or data error, show the Python traceback too (not only the one line)")


def _add_fresh(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--fresh", action="store_true",
                        help="start clean: move an earlier run in run.output_dir (its feedback.sqlite, models, "
                        "checkpoints, round dirs) aside to <run.output_dir>.old-<UTC time>, deleting nothing. Without "
                        "it, running again goes on where the earlier run stopped: finished rounds are reused, the "
                        "stored feedback of the round it was in is reused (never sampled or added again) and PPO "
                        "continues from its newest checkpoint")


def build_parser() -> tuple[argparse.ArgumentParser, dict[str, Callable]]:
    parser = argparse.ArgumentParser(
        prog="rlhf-dist", description="Distributed RLHF: SFT, reward model, PPO on Ray + vLLM + DeepSpeed.",
        epilog=EPILOG,
    )
    _add_global_options(parser, default=True)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    # The same options after the command too (`rlhf-dist ppo -c x.yaml --debug`): every subcommand inherits
    # them, with no defaults of its own, so the value given before the command stays unless repeated after.
    after = argparse.ArgumentParser(add_help=False)
    _add_global_options(after, default=False)
    add_parser = sub.add_parser
    sub.add_parser = lambda *a, **kw: add_parser(*a, parents=[after, *kw.pop("parents", [])], **kw)  # type: ignore
    handlers: dict[str, Callable] = {}

    p = sub.add_parser("config", help="show, validate or export the config schema")
    p.add_argument("action", choices=["show", "validate", "schema"],
                   help="show: resolved YAML; validate: check only; schema: JSON Schema of every option")
    p.add_argument("--markdown", action="store_true", help="with 'schema': a Markdown reference table instead")
    add_config_arg(p)
    handlers["config"] = cmd_config

    p = sub.add_parser("sft", help="supervised fine-tuning on (prompt, response) data",
                       description="Supervised fine-tuning on (prompt, response) data.")
    add_config_arg(p, STAGE_KEYS["sft"])
    handlers["sft"] = cmd_sft

    p = sub.add_parser("rm", help="train the Bradley-Terry reward model",
                       description="Train the Bradley-Terry reward model.")
    add_config_arg(p, STAGE_KEYS["rm"])
    handlers["rm"] = cmd_rm

    p = sub.add_parser("ppo", help="PPO on the distributed engine (Ray actors, vLLM, DeepSpeed)",
                       description="PPO on the distributed engine (Ray actors, vLLM, DeepSpeed).")
    add_config_arg(p, STAGE_KEYS["ppo"])
    p.add_argument("--resume", nargs="?", const="require", metavar="auto",
                   help="continue from the newest complete checkpoint in the run dir (an error when there is "
                   "none); `--resume auto`: continue when there is one, else start fresh (for requeued jobs)")
    handlers["ppo"] = cmd_ppo

    p = sub.add_parser("dpo", help="direct preference optimisation of the policy on the preference pairs",
                       description="DPO / IPO / SimPO / robust DPO of the policy on the preference pairs (the reward "
                       "stage's data options), on the policy's Ray + DeepSpeed group.")
    add_config_arg(p, STAGE_KEYS["dpo"])
    p.add_argument("--resume", nargs="?", const="require", metavar="auto",
                   help="continue from the newest complete checkpoint in the run dir (an error when there is "
                   "none); `--resume auto`: continue when there is one, else start fresh")
    handlers["dpo"] = cmd_dpo

    p = sub.add_parser("pipeline", help="all stages: SFT -> reward model -> PPO (rounds) -> eval -> report",
                       description="All stages: SFT -> reward model -> PPO (rounds) -> eval -> report.")
    add_config_arg(p, STAGE_KEYS["pipeline"])
    _add_fresh(p)
    handlers["pipeline"] = cmd_pipeline

    from rlhf_dist.stages.demo import demo_config

    p = sub.add_parser("demo", help="run the embedded default job (CPU, local)",
                       description="The full pipeline (what `make demo` runs), on the embedded demo preset unless "
                       "a config is given; exit 1 when a target (RM accuracy, win rate, KL bound) is missed.")
    add_config_arg(p, STAGE_KEYS["pipeline"], cfg=demo_config(),
                   defaults="the embedded preset rlhf_dist/config/presets/demo.yaml: SmolLM2-135M-Instruct "
                   "policy (LoRA), MiniLM reward model, simulated annotator, outputs in runs/demo")
    _add_fresh(p)
    handlers["demo"] = cmd_demo
    from rlhf_dist.eval.cli import register as register_eval  # eval, report, experiment kl-sweep
    register_eval(sub, handlers, add_config_arg, _load)
    from rlhf_dist.cluster.cli import register as register_cluster  # plan, submit, status, logs, stop
    register_cluster(sub, handlers, add_config_arg, _load)
    from rlhf_dist.feedback.cli import register as register_feedback  # serve, import, annotator, export, stats
    register_feedback(sub, handlers, add_config_arg, _load, _pair_models)
    return parser, handlers


def _pair_models(cfg: RLHFConfig) -> tuple:
    """Where `feedback generate` samples and ranks pairs: the cluster's engines and reward actors where
    evaluation runs there, else (None, None): in this process. Imported when called, so the CLI starts
    without Ray or torch."""
    from rlhf_dist.driver.sampling import pair_sampler, pair_scorer

    return pair_sampler(cfg), pair_scorer(cfg)


def main(argv: list[str] | None = None) -> int:
    parser, handlers = build_parser()
    args, extra = parser.parse_known_args(join_dotted_overrides(sys.argv[1:] if argv is None else argv))
    extra = claim_config(parser, args, extra)
    from rlhf_dist.tracking.quiet import setup_console

    # short log lines, known third-party noise off (tracking/quiet.py); --verbose: everything, DEBUG
    setup_console(verbose=args.verbose, level=args.log_level)
    try:
        return handlers[args.command](args, extra)
    except ConfigError as err:
        if args.debug:
            raise
        print(f"rlhf-dist: {err}", file=sys.stderr)
        return 2
    except DataValidationError as err:
        if args.debug:
            raise
        print(f"rlhf-dist: {err}", file=sys.stderr)
        return 3
    except Preempted as err:
        print(f"rlhf-dist: {err}", file=sys.stderr)
        return EXIT_PREEMPTED
    except RuntimeError as err:
        from rlhf_dist.workers.group import WorkerError  # only on this path: Ray is not imported to start

        if args.debug or not isinstance(err, WorkerError):
            raise
        # a rank died or hung past fault_tolerance.max_restarts: the message names role, rank, call and log
        print(f"rlhf-dist: {err}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
