"""`rlhf-dist plan | submit | status | logs | stop | pull`: plan a config, run it on a remote Ray cluster.

    rlhf-dist plan configs/llama8b-1node-8gpu.yaml --cluster nodes=1,gpus_per_node=8,gpu_mem_gib=79
    rlhf-dist submit configs/tiny.yaml --address http://HEAD:8265 --ppo.steps 2
    rlhf-dist status JOB_ID | logs JOB_ID [--follow] | stop JOB_ID   (all take --address)
    rlhf-dist pull s3://bucket/runs/JOB_ID [--to DIR]        (policy, metrics, report of a finished run)

Wired into rlhf_dist/cli.py by `register(sub, handlers, add_config_arg, _load)`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Callable
from pathlib import Path

from rlhf_dist.cluster.submit import (
    DEFAULT_ADDRESS, EXIT_CODES, EXIT_NO_SUCH_JOB, EXIT_REMOTE_PYTHON, EXIT_UNREACHABLE, EXIT_USAGE, ClusterUnreachable,
    SubmitError,
)
from rlhf_dist.config.cli_args import split_overrides

Handler = Callable[[argparse.Namespace, list[str]], int]
CLUSTER_HELP = ("hardware to plan for: KEY=VALUE,... with nodes, gpus_per_node, gpu_mem_gib, cpus_per_node, ram_gib "
                "(CPU default: this machine; CUDA default: nodes=1,gpus_per_node=8,gpu_mem_gib=80)")


PLAN_KEYS = ["cluster.device", "cluster.colocate", "rollout.num_engines", "rollout.tensor_parallel_size",
             "ppo.policy_train.zero_stage", "policy.path"]


def _add_address(p: argparse.ArgumentParser) -> None:
    p.add_argument("--address", default=os.environ.get("RAY_API_SERVER_ADDRESS") or os.environ.get("RAY_ADDRESS")
                   or DEFAULT_ADDRESS, help="Ray dashboard URL of the cluster (default: $RAY_API_SERVER_ADDRESS, "
                   f"$RAY_ADDRESS or {DEFAULT_ADDRESS})")
    p.add_argument("--token-file", help="file holding the cluster's auth token (default: $RAY_AUTH_TOKEN, "
                   "$RAY_AUTH_TOKEN_PATH, ~/.ray/auth_token)")


def cmd_plan(load_cfg: Callable) -> Handler:
    def run(args: argparse.Namespace, extra: list[str]) -> int:
        from rlhf_dist.cluster.placement import PlanError, parse_hardware
        from rlhf_dist.cluster.plan import make_plan
        from rlhf_dist.cluster.render import plan_to_dict, render_plan

        cfg = load_cfg(args, extra)
        try:
            plan = make_plan(cfg, parse_hardware(args.cluster, cfg))
        except PlanError as err:
            print(f"rlhf-dist plan: {err}", file=sys.stderr)
            return 2
        if args.cluster is None and cfg.cluster.device == "cuda":
            print(f"rlhf-dist plan: no --cluster given: planning for {plan.hardware.describe('cuda')}", file=sys.stderr)
        print(json.dumps(plan_to_dict(plan), indent=2) if args.json else render_plan(plan, args.config or "<defaults>"))
        return 0 if plan.fits else 1

    return run


def cmd_submit(load_cfg: Callable) -> Handler:
    def run(args: argparse.Namespace, extra: list[str]) -> int:
        from rlhf_dist.cluster import submit as sub

        cfg = load_cfg(args, extra)  # a typo fails here, before anything reaches the cluster
        if args.cluster:
            from rlhf_dist.cluster.placement import PlanError, parse_hardware
            from rlhf_dist.cluster.plan import make_plan
            from rlhf_dist.cluster.render import render_plan

            try:
                plan = make_plan(cfg, parse_hardware(args.cluster, cfg))
            except PlanError as err:
                print(f"rlhf-dist submit: {err}", file=sys.stderr)
                return 2
            if not plan.fits:
                print(render_plan(plan, args.config), file=sys.stderr)
                return 1
        working_dir = Path(args.working_dir).resolve()
        job_id = args.job_id or sub.new_job_id(args.stage)
        try:
            config_rel = sub.config_in_working_dir(args.config, working_dir) if args.config else None
            runtime_env = sub.build_runtime_env(working_dir, args.env, args.exclude)
            files, nbytes = sub.check_upload(working_dir, runtime_env["excludes"])
            # each job its own run dir; a relative one would land in Ray's temporary copy of the working dir
            run_dir = sub.job_output_dir(cfg.run.output_dir, job_id)
            python = args.python or _default_python(args.address)
            overrides = sub.with_output_dir(split_overrides(extra), run_dir)
            entrypoint = sub.build_entrypoint(args.stage, config_rel, overrides, python)
            client = sub.make_client(args.address, args.token_file)
        except SubmitError as err:
            print(f"rlhf-dist submit: {err}", file=sys.stderr)
            return EXIT_UNREACHABLE if isinstance(err, ClusterUnreachable) else EXIT_USAGE
        if not args.no_preflight:
            from rlhf_dist.cluster.preflight import RemotePythonError, check_remote_python, required_modules

            try:
                check_remote_python(client, python, required_modules(cfg))
            except RemotePythonError as err:
                print(f"rlhf-dist submit: {err}", file=sys.stderr)
                return EXIT_REMOTE_PYTHON
        print(f"uploading {working_dir} ({files} files, {nbytes / 2**20:.1f} MiB) to {args.address}", flush=True)
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=job_id,
                                   entrypoint_num_cpus=args.entrypoint_num_cpus,
                                   metadata={"rlhf_dist_stage": args.stage, "config": config_rel or ""})
        print(f"submitted {job_id}: {entrypoint}", flush=True)
        print(f"run dir: {run_dir} (bring results back with: rlhf-dist pull {run_dir})", flush=True)
        if args.no_wait:
            print(f"follow it with: rlhf-dist logs {job_id} --follow --address {args.address}")
            return 0
        try:
            status = sub.stream_until_done(client, job_id)
        except KeyboardInterrupt:
            print(f"\ndetached; {job_id} keeps running (rlhf-dist stop {job_id} --address {args.address})")
            return 130
        print(sub.job_summary(client, job_id))
        return EXIT_CODES.get(status, 1)

    return run


def _default_python(address: str) -> str:
    """The job's interpreter: this one when the cluster is this machine, else `python3` (the preflight checks it)."""
    from rlhf_dist.cluster.preflight import is_local

    return sys.executable if is_local(address) else "python3"


def _with_client(action: Callable) -> Handler:
    """Connect with --address/--token-file and run `action(client, args)`; exit 4 unreachable, 6 unknown job."""

    def run(args: argparse.Namespace, extra: list[str]) -> int:
        from rlhf_dist.cluster.submit import make_client

        if extra:
            print(f"rlhf-dist {args.command}: unexpected arguments {' '.join(extra)}", file=sys.stderr)
            return EXIT_USAGE
        try:
            client = make_client(args.address, args.token_file)
        except SubmitError as err:
            print(f"rlhf-dist {args.command}: {err}", file=sys.stderr)
            return EXIT_UNREACHABLE if isinstance(err, ClusterUnreachable) else EXIT_USAGE
        try:
            return action(client, args)
        except (ConnectionError, OSError) as err:  # the head went away after connecting (requests' errors too)
            print(f"rlhf-dist {args.command}: cannot reach the Ray dashboard at {args.address}: {err}", file=sys.stderr)
            return EXIT_UNREACHABLE
        except RuntimeError as err:  # the job client's error for an unknown job id or a failed request
            print(f"rlhf-dist {args.command}: {err}", file=sys.stderr)
            unknown = "does not exist" in str(err) or "404" in str(err)
            return EXIT_NO_SUCH_JOB if unknown else 1

    return run


def _status(client, args: argparse.Namespace) -> int:
    from rlhf_dist.cluster.submit import job_summary, wait_terminal

    if args.wait:
        status = wait_terminal(client, args.job_id)
        print(job_summary(client, args.job_id))
        return EXIT_CODES.get(status, 1)
    print(job_summary(client, args.job_id))
    return 0


def _logs(client, args: argparse.Namespace) -> int:
    if not args.follow:
        print(client.get_job_logs(args.job_id), end="")
        return 0

    async def tail() -> None:
        async for chunk in client.tail_job_logs(args.job_id):
            print(chunk, end="", flush=True)

    asyncio.run(tail())
    return 0


def _stop(client, args: argparse.Namespace) -> int:
    from rlhf_dist.cluster.submit import job_summary, wait_terminal

    stopped = client.stop_job(args.job_id)
    if args.wait:
        wait_terminal(client, args.job_id)
    print(job_summary(client, args.job_id) + ("" if stopped else " (was not running)"))
    return 0


def cmd_pull(args: argparse.Namespace, extra: list[str]) -> int:
    """Copy a run's exported policy, metrics, summary and report from its URI or run dir to here."""
    from rlhf_dist.storage import StorageError, is_uri, local_path, pull_run

    if extra:
        print(f"rlhf-dist pull: unexpected arguments {' '.join(extra)}", file=sys.stderr)
        return EXIT_USAGE
    name = args.run.partition("?")[0].rstrip("/").rsplit("/", 1)[-1] or "run"
    dest = Path(args.to) if args.to else Path("runs") / "pulled" / name
    if not is_uri(args.run) and local_path(args.run).resolve() == dest.resolve():
        print(f"rlhf-dist pull: {args.run} is the destination itself; pass --to DIR", file=sys.stderr)
        return EXIT_USAGE
    try:
        got = pull_run(args.run, dest)
    except StorageError as err:
        print(f"rlhf-dist pull: {err}", file=sys.stderr)
        return EXIT_USAGE
    print(f"pulled {', '.join(got)} from {args.run} to {dest}")
    return 0


def register(sub, handlers: dict[str, Callable], add_config_arg: Callable, load_cfg: Callable) -> None:
    """Add plan/submit/status/logs/stop to the `rlhf-dist` subparsers `sub`; handlers go into `handlers`."""
    p = sub.add_parser("plan", help="placement, parallel sizes and per-device memory of a config; starts nothing",
                       description="Validate the config and print its actor groups, placement, data-parallel sizes "
                       "and a per-device memory estimate; exit 1 when it does not fit the hardware.")
    add_config_arg(p, PLAN_KEYS)
    p.add_argument("--cluster", metavar="SPEC", help=CLUSTER_HELP)
    p.add_argument("--json", action="store_true", help="machine-readable plan (bytes)")
    handlers["plan"] = cmd_plan(load_cfg)

    p = sub.add_parser("submit", help="validate locally, then run a stage as a Ray job on a remote cluster",
                       description="Validate the config here, upload the working dir (no weights, checkpoints, "
                       "outputs, .git or virtualenvs), run the stage as a Ray job, stream its logs. Each job writes "
                       "to <run.output_dir>/<job id>; run.output_dir must be absolute (on storage every node sees) "
                       "or a storage URI (s3://, gs://). Exit code: "
                       "0 SUCCEEDED, 1 FAILED, 5 STOPPED, 2 invalid config or arguments (nothing submitted), 4 cluster "
                       "unreachable or auth refused, 7 the cluster's --python cannot import rlhf-dist's requirements.")
    add_config_arg(p, ["ppo.steps", "cluster.device", "cluster.address", "run.output_dir"])
    _add_address(p)
    p.add_argument("--stage", choices=["ppo", "rm", "sft", "dpo", "pipeline", "demo"], default="ppo",
                   help="the rlhf-dist command the job runs (default ppo)")
    p.add_argument("--working-dir", default=".", help="directory uploaded as the job's working dir (default .)")
    p.add_argument("--env", action="append", default=[], metavar="KEY[=VALUE]",
                   help="environment variable for the job; KEY alone copies this shell's value (repeatable)")
    p.add_argument("--exclude", action="append", default=[], metavar="PATTERN",
                   help="extra gitignore-style pattern not to upload (repeatable)")
    p.add_argument("--cluster", metavar="SPEC", help="also check `plan` against this hardware before submitting")
    p.add_argument("--job-id", help="submission id, also the name of the job's run dir under run.output_dir "
                   "(default: rlhf-STAGE-DATE-TIME-XXXX)")
    p.add_argument("--python", help="interpreter on the cluster that has rlhf-dist's requirements (default: this "
                   "one when --address is this machine, else python3 from the head's PATH; checked before uploading)")
    p.add_argument("--no-preflight", action="store_true",
                   help="skip the check that --python on the cluster imports rlhf-dist's requirements (a tiny job)")
    p.add_argument("--entrypoint-num-cpus", type=float, default=0.0, help="CPUs reserved for the job's driver")
    p.add_argument("--no-wait", action="store_true", help="return after submitting; do not stream logs")
    handlers["submit"] = cmd_submit(load_cfg)

    p = sub.add_parser("pull", help="bring a run's policy, metrics and report here (from a URI or a run dir)",
                       description="Copy the exported policy, metrics.jsonl, ppo_metrics.json, summary.json and "
                       "report/ of a run from its storage URI (s3://, gs://, ...) or run dir. A directory whose "
                       "upload is incomplete is skipped with a warning. Exit 2 when nothing could be pulled.")
    p.add_argument("run", metavar="RUN", help="the run's output dir: a storage URI or a path")
    p.add_argument("--to", metavar="DIR", help="destination (default runs/pulled/<last part of RUN>)")
    handlers["pull"] = cmd_pull

    for name, action, text in (("status", _status, "a job's status and message"),
                               ("logs", _logs, "a job's logs"), ("stop", _stop, "stop a job")):
        p = sub.add_parser(name, help=text, description=f"{text[0].upper()}{text[1:]} (Ray job client). Exit code: "
                           "2 bad arguments, 4 cluster unreachable or auth refused, 6 no job with that id"
                           + ("; with --wait: 0 SUCCEEDED, 1 FAILED, 5 STOPPED." if name != "logs" else "."))
        p.add_argument("job_id", metavar="JOB_ID", help="the id `rlhf-dist submit` printed")
        _add_address(p)
        if name == "logs":
            p.add_argument("--follow", "-f", action="store_true", help="keep streaming until the job ends")
        else:
            p.add_argument("--wait", action="store_true", help="block until the job has ended (exit code: its state)")
        handlers[name] = _with_client(action)
