"""What a pipeline run has finished, so that running it again goes on where it stopped; `--fresh` to start clean.

    <run>/pipeline_state.json
    {"config": {...}, "sft": "<dir>",
     "rounds": {"1": {"snapshot": "<file>",                      service rounds: their votes exported
                      "reward_dir": "<dir>", "rm_metrics": {..},  the round's reward model saved
                      "dpo_started": true,                        pipeline.method dpo/online_dpo: DPO began
                      "policy_dir": "<dir>"}}}                    PPO/DPO exported: the round is finished

Each entry is written (atomically) right after its stage ends, so the file never claims more than what is on
disk. A restarted pipeline reuses a finished round's reward model, policy and snapshot; in the round it was in,
it reuses the reward model when it was saved and PPO goes on from its newest checkpoint (`--resume auto`).
The round's feedback is keyed in the database itself (stages/pipeline.py, stages/feedback_rounds.py), so a
restart never adds a second copy of it.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path

from rlhf_dist.config import ConfigError, RLHFConfig
from rlhf_dist.storage import is_uri
from rlhf_dist.utils import write_json

log = logging.getLogger(__name__)
STATE_FILE = "pipeline_state.json"
# options that may change between a stopped run and its restart without making its finished work stale
VOLATILE = ("run.output_dir", "pipeline.rounds", "checkpoint.", "tracking.", "cluster.", "fault_tolerance.",
            "feedback.source", "feedback.wait_timeout_s")


def _flat(tree: dict, prefix: str = "") -> dict[str, object]:
    out: dict[str, object] = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def _settings(cfg: RLHFConfig) -> dict[str, object]:
    flat = _flat(json.loads(cfg.model_dump_json()))
    return {k: v for k, v in flat.items() if not k.startswith(VOLATILE)}


class PipelineState:
    """The run dir's record of finished stages (see the module docstring)."""

    def __init__(self, run_dir: Path, cfg: RLHFConfig):
        self.path = Path(run_dir) / STATE_FILE
        self.data: dict = json.loads(self.path.read_text()) if self.path.is_file() else {}
        self.earlier = bool(self.data)  # an earlier run of this pipeline recorded something here
        settings = _settings(cfg)
        if self.data:
            before = self.data.get("config", {})
            changed = sorted(k for k in settings.keys() | before.keys() if settings.get(k) != before.get(k))
            log.info("%s: a pipeline run was here; finished rounds are reused (--fresh starts clean)", self.path)
            if changed:  # the finished work was made with other settings: say so, it is not redone
                log.warning("the earlier run in %s used other settings (%s): its finished stages are reused "
                            "anyway; run with --fresh to redo them", run_dir, ", ".join(changed[:8]))
        self.data.setdefault("rounds", {})
        self.data["config"] = settings

    def _save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        write_json(self.path, self.data)

    def round(self, r: int) -> dict:
        """What round r has finished so far (empty: nothing)."""
        return dict(self.data["rounds"].get(str(r), {}))

    def record(self, r: int, **done: object) -> None:
        self.data["rounds"].setdefault(str(r), {}).update({k: str(v) if isinstance(v, Path) else v
                                                           for k, v in done.items()})
        self._save()

    def reward_model(self, r: int) -> tuple[Path, dict] | None:
        """Round r's saved reward model and its metrics, when it was saved and is still there."""
        entry = self.round(r)
        if "reward_dir" in entry and (Path(entry["reward_dir"]) / "config.json").is_file():
            return Path(entry["reward_dir"]), entry["rm_metrics"]
        return None

    def finished_policy(self, r: int) -> Path | None:
        """Round r's exported policy when the round finished (its reward model, or DPO's start, and policy still
        there)."""
        entry = self.round(r)
        trained = self.reward_model(r) is not None or entry.get("dpo_started", False)
        if trained and "policy_dir" in entry and (Path(entry["policy_dir"]) / "config.json").is_file():
            return Path(entry["policy_dir"])
        return None

    def snapshot(self, r: int) -> Path | None:
        entry = self.round(r)
        return Path(entry["snapshot"]) if "snapshot" in entry and Path(entry["snapshot"]).is_file() else None

    def sft_dir(self) -> Path | None:
        sft = self.data.get("sft")
        return Path(sft) if sft and (Path(sft) / "config.json").is_file() else None

    def record_sft(self, model_dir: Path) -> Path:
        self.data["sft"] = str(model_dir)
        self._save()
        return model_dir


def check_fresh(cfg: RLHFConfig) -> None:
    """`--fresh` where it cannot start clean: one line, before anything is written. A run dir behind a storage
    URI keeps its files remotely; a feedback.db_url database is shared and holds people's votes, which
    --fresh never deletes."""
    if is_uri(cfg.run.output_dir):
        raise ConfigError([f"--fresh: run.output_dir {cfg.run.output_dir} is a storage URI, whose files --fresh "
                           "does not move: give a new run.output_dir instead"])
    if cfg.feedback.db_url:
        prefix = f"{cfg.run.name}-round-"
        names = [n for n in _campaign_names(cfg.feedback.db_url) if n.startswith(prefix)]
        if names:
            raise ConfigError([f"--fresh: feedback.db_url already holds this run's campaigns ({', '.join(names)}), "
                               "and --fresh deletes no votes from a shared database: set another --run.name"])


def _campaign_names(db_url: str) -> list[str]:
    from sqlalchemy import select
    from sqlalchemy.engine import make_url

    from rlhf_dist.feedback.db import open_database, transaction
    from rlhf_dist.feedback.tables import Campaign

    url = make_url(db_url)
    if url.get_backend_name() == "sqlite" and not (url.database and Path(url.database).is_file()):
        return []  # no database yet: nothing in it (and opening it would create it)
    with transaction(open_database(db_url)) as session:
        return list(session.scalars(select(Campaign.name).order_by(Campaign.id)))


def set_aside(run_dir: Path) -> Path | None:
    """Move an earlier run in run_dir (all of it: feedback.sqlite, models, checkpoints, round dirs, reports) to
    a sibling `<run_dir>.old-<UTC time>`; nothing is deleted. Returns where it went (None: nothing was there)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir() or not any(run_dir.iterdir()):
        return None
    if run_dir.resolve() in (Path.cwd(), *Path.cwd().parents):
        raise ConfigError([f"--fresh: run.output_dir {run_dir} is the current directory or above it; "
                           "pick a run dir of its own"])
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    target = run_dir.with_name(f"{run_dir.name}.old-{stamp}")
    n = 1
    while target.exists():  # two --fresh runs within a second
        target, n = run_dir.with_name(f"{run_dir.name}.old-{stamp}-{n}"), n + 1
    shutil.move(str(run_dir), str(target))
    log.info("--fresh: the earlier run in %s was moved to %s (nothing deleted); starting clean", run_dir, target)
    return target
