"""`rlhf-dist feedback ...`: serve the annotation service, import pairs, add annotators, export, stats.

    rlhf-dist feedback serve -c configs/tiny.yaml --feedback.port 8765
    rlhf-dist feedback generate --policy runs/tiny/policy --prompts prompts.jsonl --campaign round-2
    rlhf-dist feedback import pairs.jsonl --campaign round-1
    rlhf-dist feedback annotator add alice          # the token is the last line of stdout
    rlhf-dist feedback annotator list | disable alice | rotate alice   # rotate prints a new token last
    rlhf-dist feedback export votes.jsonl --campaign round-1
    rlhf-dist feedback stats
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from rlhf_dist.config import RLHFConfig

if TYPE_CHECKING:
    from rlhf_dist.feedback.generate import Sampler
    from rlhf_dist.feedback.selection import ScorerFactory

    # where `generate` samples and ranks (driver/sampling.py, handed in from the CLI above: no Ray here)
    PairModels = Callable[[RLHFConfig], tuple[Sampler | None, ScorerFactory | None]]

CLI_OPTION = {"campaign": "--campaign", "version": "--version", "name": "NAME", "role": "--role", "kind": "--kind",
              "FILE": "FILE", "out": "OUT"}


# SQLAlchemy and alembic load inside the commands (here and below): `rlhf-dist --help` does not need them.
def _sessions(cfg: RLHFConfig):  # noqa: ANN202 - sessionmaker
    from rlhf_dist.feedback.db import db_url_of, open_database

    return open_database(db_url_of(cfg.feedback.db_url, cfg.run.output_dir))


def cmd_serve(cfg: RLHFConfig, _args: argparse.Namespace) -> int:
    import uvicorn

    from rlhf_dist.feedback.app import create_app
    from rlhf_dist.feedback.db import db_url_of

    fb = cfg.feedback
    db_url = db_url_of(fb.db_url, cfg.run.output_dir)
    app = create_app(fb, db_url)
    print(f"feedback service: http://{fb.host}:{fb.port}/ (annotators), /admin, /docs; database {_shown(db_url)}",
          flush=True)
    uvicorn.run(app, host=fb.host, port=fb.port, log_level=fb.log_level, access_log=fb.log_level == "debug")
    return 0


def _shown(db_url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(db_url).render_as_string(hide_password=True)


def _check_name(field: str, name: str) -> None:
    """The name rule (feedback/text.py), before anything is opened or written."""
    from rlhf_dist.feedback.queue import FeedbackError
    from rlhf_dist.feedback.text import check_name

    try:
        check_name(name)
    except ValueError as err:
        raise FeedbackError(2, field, str(err)) from None


def cmd_import(cfg: RLHFConfig, args: argparse.Namespace) -> int:
    from rlhf_dist.feedback.admin import add_pairs
    from rlhf_dist.feedback.queue import FeedbackError
    from rlhf_dist.feedback.text import load_pairs

    _check_name("campaign", args.campaign)
    if not Path(args.file).exists():
        raise FeedbackError(2, "FILE", f"{args.file}: no such file")
    loaded = load_pairs(args.file, on_error=cfg.data.on_error)
    if not loaded.records:
        raise FeedbackError(2, "FILE", f"{args.file}: no pairs in the file")
    added = add_pairs(_sessions(cfg), args.campaign, loaded.records, kind=args.kind, overlap=cfg.feedback.overlap,
                      max_votes=cfg.feedback.adaptive_overlap.max_votes)
    skipped = f" ({len(loaded.errors)} bad rows skipped)" if loaded.errors else ""
    print(f"added {added} pairs to campaign {args.campaign!r}{skipped}")
    return 0


def cmd_annotator(cfg: RLHFConfig, args: argparse.Namespace) -> int:
    from rlhf_dist.feedback import admin

    if args.verb == "list":
        rows = admin.list_annotators(_sessions(cfg))
        width = max([len(r["name"]) for r in rows] + [4])
        print(f"{'name':<{width}}  role       status       votes")
        for r in rows:
            print(f"{r['name']:<{width}}  {r['role']:<9}  {r['status']:<11}  {r['votes']}")
        return 0
    if args.verb == "disable":
        admin.disable_annotator(_sessions(cfg), args.name)
        print(f"disabled {args.name!r}: their token is refused from now on (`annotator rotate` gives a new one)")
        return 0
    if args.verb == "rotate":
        token = admin.rotate_token(_sessions(cfg), args.name)
        print(f"new token for {args.name!r} (the old one is refused from now on; shown once, keep it secret):")
        print(token)
        return 0
    _check_name("name", args.name)
    token = admin.add_annotator(_sessions(cfg), args.name, args.role)
    print(f"added {args.role} {args.name!r}; their token (shown once, keep it secret):")
    print(token)
    return 0


def cmd_export(cfg: RLHFConfig, args: argparse.Namespace) -> int:
    from rlhf_dist.feedback.admin import export_snapshot

    fb = cfg.feedback
    meta = export_snapshot(_sessions(cfg), args.campaign, args.out, args.aggregate or fb.aggregate,
                           version=args.version, quality=(fb.min_reliability, fb.unreliable))
    print(f"snapshot v{meta['version']} of {meta['campaign']!r}: {meta['rows']} pairs from {meta['votes']} votes "
          f"({meta['aggregate']}) -> {meta['path']} (sha256 {meta['sha256'][:12]}); "
          f"train on it with: rlhf-dist rm --data.pairs_path {meta['path']} --data.pairs_format ab")
    return 0


def cmd_stats(cfg: RLHFConfig, args: argparse.Namespace) -> int:
    from rlhf_dist.feedback.admin import all_stats

    stats = all_stats(_sessions(cfg), args.campaign, cfg.feedback.min_reliability)
    if args.json:
        print(json.dumps(stats, indent=2))
        return 0
    if not stats:
        print("no campaigns yet")
    for s in stats:
        left = "-" if s["left_rate"] is None else f"{100 * s['left_rate']:.1f}% of {s['decisive_votes']}"
        print(f"{s['campaign']} ({s['kind']}, overlap {s['overlap']}): {s['votes']}/{s['votes_wanted']} votes, "
              f"{s['pairs_complete']}/{s['pairs']} pairs complete; A {s['choices']['A']} B {s['choices']['B']} "
              f"tie {s['choices']['tie']}; left chosen {left}; alpha {s['krippendorff_alpha']}, "
              f"pairwise agreement {s['pairwise_agreement']}")
        if s["max_votes"] is not None:
            print(f"  adaptive overlap: {s['pairs_split']} pairs split and got extra votes (up to {s['max_votes']} "
                  f"each): {s['extra_votes']} votes beyond the overlap of {s['overlap']}")
        if s["left_binomial_p"] is not None and s["decisive_votes"]:
            print(f"  position bias: left chosen {left}, binomial p = {s['left_binomial_p']:.4g}")
        for name, q in s["annotators"].items():
            print(f"  {name}: {q['votes']} votes; gold accuracy {q['gold_accuracy']} ({q['gold_votes']} gold); "
                  f"agreement with the others' majority {q['majority_agreement']}; left rate {q['left_rate']}"
                  + ("  FLAGGED (reliability below feedback.min_reliability)" if q["flagged"] else ""))
    return 0


def cmd_generate(cfg: RLHFConfig, args: argparse.Namespace, pair_models: PairModels) -> int:
    from rlhf_dist.data.validate import load_records
    from rlhf_dist.feedback.admin import add_pairs
    from rlhf_dist.feedback.generate import sample_pairs
    from rlhf_dist.feedback.queue import FeedbackError
    from rlhf_dist.feedback.selection import selection_ranks

    from rlhf_dist.feedback.text import ID_MAX

    _check_name("campaign", args.campaign)
    if args.seed is not None and not -ID_MAX - 1 <= args.seed <= ID_MAX:
        raise FeedbackError(2, "--seed", f"must be a 32-bit integer, got {args.seed}")
    for flag, path in (("--policy", Path(args.policy) / "config.json"), ("--prompts", Path(args.prompts))):
        if not path.exists():
            raise FeedbackError(2, flag, f"{path.parent if flag == '--policy' else path}: not found")
    if cfg.feedback.selection != "random" and args.reward_model is None:
        raise FeedbackError(2, "--reward-model", f"feedback.selection={cfg.feedback.selection} ranks pairs with a "
                            "trained reward model: pass --reward-model DIR (or --feedback.selection random)")
    prompts = [r.prompt for r in load_records(args.prompts, "prompt", on_error=cfg.data.on_error).records]
    prompts = prompts[: args.limit] if args.limit else prompts
    if not prompts:
        raise FeedbackError(2, "--prompts", f"{args.prompts}: no prompts in it")
    sessions = _sessions(cfg)  # the database only once the inputs were read: a bad file creates nothing
    sampler, scorer = pair_models(cfg)
    pairs = sample_pairs(cfg, args.policy, prompts, seed=cfg.run.seed if args.seed is None else args.seed,
                         sampler=sampler)
    ranks = selection_ranks(cfg, pairs, Path(args.reward_model) if args.reward_model else None, scorer=scorer)
    added = add_pairs(sessions, args.campaign, pairs, kind=args.kind, overlap=cfg.feedback.overlap, ranks=ranks,
                      max_votes=cfg.feedback.adaptive_overlap.max_votes)
    print(f"added {added} pairs sampled from {args.policy} to campaign {args.campaign!r} "
          f"(selection: {cfg.feedback.selection}); serve them with `rlhf-dist feedback serve`")
    return 0


ACTIONS: dict[str, Callable[[RLHFConfig, argparse.Namespace], int]] = {
    "serve": cmd_serve, "import": cmd_import, "annotator": cmd_annotator, "export": cmd_export, "stats": cmd_stats,
}


def register(sub, handlers: dict, add_config_arg: Callable, load: Callable,  # noqa: ANN001
             pair_models: PairModels) -> None:
    """The `feedback` command. pair_models(cfg): where `generate` samples pairs and ranks them (driver/sampling.py,
    handed in from the CLI above: this layer holds no Ray)."""
    actions_of = {**ACTIONS, "generate": partial(cmd_generate, pair_models=pair_models)}
    p = sub.add_parser("feedback", help="the human-feedback service: serve, import, annotator, export, stats",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("serve", help="run the web service (annotator page, admin page, API) with uvicorn")
    add_config_arg(a, ["feedback.host", "feedback.port", "feedback.db_url", "feedback.log_level"])
    a = actions.add_parser("import", help="add pairs to a campaign from JSONL/JSON/CSV/Parquet "
                           "(columns prompt, response_a, response_b; optional source_a, source_b, sampling, seed, "
                           "gold)")
    a.add_argument("file", help="the pairs file")
    a.add_argument("--campaign", required=True, help="campaign name (created when new)")
    a.add_argument("--kind", choices=["training", "evaluation"], default="training", help="for a new campaign")
    add_config_arg(a, ["feedback.overlap", "feedback.adaptive_overlap.max_votes", "feedback.db_url", "data.on_error"])
    a = actions.add_parser("generate", help="sample two responses per prompt from a policy into a campaign "
                           "(rollout engine; records the policy hash, sampling, seed and log-probs)")
    a.add_argument("--policy", required=True, help="policy HF dir (e.g. runs/tiny/policy)")
    a.add_argument("--prompts", required=True, help="prompts file (JSONL/JSON/CSV/Parquet with a 'prompt' column)")
    a.add_argument("--campaign", required=True, help="campaign name (created when new)")
    a.add_argument("--kind", choices=["training", "evaluation"], default="training", help="for a new campaign")
    a.add_argument("--limit", type=int, help="only the first N prompts")
    a.add_argument("--seed", type=int, help="sampling seed (default run.seed)")
    a.add_argument("--reward-model", help="trained reward model dir, for feedback.selection uncertainty/disagreement")
    add_config_arg(a, ["feedback.selection", "feedback.overlap", "feedback.adaptive_overlap.max_votes",
                       "rollout.sampling.temperature", "feedback.db_url"])
    a = actions.add_parser("annotator", help="accounts: 'add NAME' (prints the token last), 'list', "
                           "'disable NAME', 'rotate NAME' (a new token; the old one is refused at once)")
    verbs = a.add_subparsers(dest="verb", required=True, metavar="VERB")
    v = verbs.add_parser("add", help="create a login; prints its token last (shown once)")
    v.add_argument("name", help="the annotator's name: 1-200 printable characters, no '/'")
    v.add_argument("--role", choices=["annotator", "admin"], default="annotator", help="default: annotator")
    add_config_arg(v, ["feedback.db_url"])
    v = verbs.add_parser("list", help="every account: name, role, status, votes (never a token)")
    add_config_arg(v, ["feedback.db_url"])
    v = verbs.add_parser("disable", help="refuse this account's token from now on (its votes stay)")
    v.add_argument("name", help="the annotator's name")
    add_config_arg(v, ["feedback.db_url"])
    v = verbs.add_parser("rotate", help="give the account a new token (printed last; enables a disabled one)")
    v.add_argument("name", help="the annotator's name")
    add_config_arg(v, ["feedback.db_url"])
    a = actions.add_parser("export", help="write a campaign's votes as A/B JSONL for `rlhf-dist rm` (a new version)")
    a.add_argument("out", help="output .jsonl (a .meta.json with version and sha256 is written beside it)")
    a.add_argument("--campaign", required=True, help="campaign to export")
    a.add_argument("--aggregate", choices=["majority", "soft"], help="default: feedback.aggregate")
    a.add_argument("--version", type=int, help="re-export exactly the votes of this earlier snapshot")
    add_config_arg(a, ["feedback.aggregate", "feedback.min_reliability", "feedback.unreliable", "feedback.db_url"])
    a = actions.add_parser("stats", help="progress, per-annotator counts, agreement, left-position rate")
    a.add_argument("--campaign", help="one campaign (default: all)")
    a.add_argument("--json", action="store_true", help="machine-readable output")
    add_config_arg(a, ["feedback.min_reliability", "feedback.db_url"])

    def handler(args: argparse.Namespace, extra: list[str]) -> int:
        from rlhf_dist.feedback.db import FeedbackDBError
        from rlhf_dist.feedback.queue import FeedbackError

        cfg = load(args, extra)
        try:
            return actions_of[args.action](cfg, args)
        except FeedbackError as err:
            where = CLI_OPTION.get(err.field, err.field)
            print(f"rlhf-dist feedback {args.action}: {where}: {err.message}", file=sys.stderr)
            return 2
        except FeedbackDBError as err:
            print(f"rlhf-dist feedback {args.action}: {err}", file=sys.stderr)
            return 2

    handlers["feedback"] = handler
