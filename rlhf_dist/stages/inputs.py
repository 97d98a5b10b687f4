"""Every input of a command, checked before it writes anything.

    dirs = check_inputs(cfg, models=["policy.path"], splits=["prompts", "eval_prompts"])

In this order: run.output_dir must be a usable directory; each model option must name a model (a local
Hugging Face directory with config.json, or builtin:NAME); each data file the command will read is read
and validated the way its stage reads it (rows, format, tie policy, the tokenizer's length limit),
logging and writing nothing. Only then does a command create its run dir, its feedback database or the
built-in demo data (data/files.py DataFiles). A mistake is one line naming the option and its value.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import needs_reward_model
from rlhf_dist.config.schema_parts import ModelConfig
from rlhf_dist.data.files import (
    DataFiles, load_encoded_pairs, load_encoded_sft, load_prompts, read_splits, resolve_data_files,
)
from rlhf_dist.utils import check_output_dir

# the model whose tokenizer each tokenised split is read with (its stage's model)
TOKENIZED_BY = {"sft": "policy.path", "pairs": "reward_model.path", "eval_pairs": "reward_model.path"}


def _model(cfg: RLHFConfig, option: str) -> ModelConfig:
    return {"policy.path": cfg.policy, "reward_model.path": cfg.reward_model}[option]


def check_inputs(cfg: RLHFConfig, models: Sequence[str] = (), splits: Sequence[str] = (),
                 dirs: dict[str, Path] | None = None) -> dict[str, Path]:
    """Check run.output_dir, the model options in `models` and the data `splits` the command reads (those
    the user set; the built-in ones need no check). `dirs`: models resolved already, by option (a split is
    then tokenised with that model's tokenizer). Returns {option: local model dir}. Writes nothing (a
    builtin: model is materialised in the model cache, never in run.output_dir)."""
    from rlhf_dist.models import resolve_model_path

    check_output_dir(Path(cfg.run.output_dir))
    dirs = dict(dirs or {})
    for option in models:
        if option not in dirs:
            dirs[option] = resolve_model_path(_model(cfg, option).path, seed=cfg.run.seed, option=option)
    files = resolve_data_files(cfg)  # each data.*_path set exists and is not empty
    readers = {split: _reader(cfg, files, split, dirs) for split in splits if files.is_given(split)}
    read_splits(files, readers)  # the user's files only: no built-in data is written here
    return dirs


def _reader(cfg: RLHFConfig, files: DataFiles, split: str, dirs: dict[str, Path]) -> Callable[[Path], object]:
    if split in ("prompts", "eval_prompts"):
        return lambda path: load_prompts(cfg, path)
    from rlhf_dist.models import load_tokenizer, resolve_model_path

    option = TOKENIZED_BY[split]
    model = _model(cfg, option)
    if option not in dirs:
        dirs[option] = resolve_model_path(model.path, seed=cfg.run.seed, option=option)
    tokenizer = load_tokenizer(dirs[option], model.trust_remote_code)
    if split == "sft":
        return lambda path: load_encoded_sft(cfg, tokenizer, path, "sft data", check_only=True)
    fmt = files.pairs_format if split == "pairs" else files.eval_pairs_format
    return lambda path: load_encoded_pairs(cfg, tokenizer, path, fmt, split, check_only=True)


def reward_model_to_train(cfg: RLHFConfig) -> bool:
    """PPO with a 'model' reward source and no trained reward model at reward_model.path: one is trained
    first (stages/ppo.py), on data.pairs_path / data.eval_pairs_path."""
    from rlhf_dist.models.scalar_head import HEAD_META

    path = cfg.reward_model.path
    return needs_reward_model(cfg) and (path.startswith("builtin:") or not (Path(path) / HEAD_META).is_file())


def check_ppo_inputs(cfg: RLHFConfig, policy_dir: Path | None = None, reward_dir: Path | None = None) -> None:
    """`rlhf-dist ppo`: the policy, the reward model when a source needs one (and the preference files when
    it must be trained first), the prompts, the cluster to join, and a checkpoint for checkpoint.resume true."""
    from rlhf_dist.config import ConfigError

    given = {**({"policy.path": policy_dir} if policy_dir else {}),
             **({"reward_model.path": reward_dir} if reward_dir else {})}
    train_rm = reward_dir is None and reward_model_to_train(cfg)
    models = ["policy.path"] + ["reward_model.path"] * (reward_dir is None and needs_reward_model(cfg))
    check_inputs(cfg, models, ["prompts", *(["pairs", "eval_pairs"] if train_rm else [])], dirs=given)
    check_cluster(cfg)
    if train_rm and cfg.checkpoint.resume is True:  # else run_ppo checks it, before it writes anything
        from rlhf_dist.driver.checkpoint import CheckpointManager

        ckpt = CheckpointManager(Path(cfg.run.output_dir), cfg.checkpoint.keep_last, cfg.checkpoint.checksums)
        if ckpt.latest() is None:
            raise ConfigError([f"checkpoint.resume: no complete checkpoint in {ckpt.root} (use --resume auto to "
                               "start fresh when there is none)"])


def check_cluster(cfg: RLHFConfig) -> None:
    """A Ray cluster to join (cluster.address, or RAY_ADDRESS) reachable with this shell's auth settings:
    one line naming what to set otherwise (driver/join.py), before anything is written."""
    import os

    from rlhf_dist.driver.join import check_join
    from rlhf_dist.driver.actors import join_address

    address = join_address(cfg.cluster.address, dict(os.environ))
    if address:
        check_join(address)


def pipeline_splits(cfg: RLHFConfig) -> list[str]:
    """The data files a pipeline run reads: SFT data (pipeline.run_sft), the configured preferences (round 1
    trains on them unless pipeline.first_round_preferences is policy_samples), the eval pairs (the final
    evaluation's RM accuracy), the prompts (PPO, new pairs) and the held-out prompts (evaluation)."""
    first_round_data = cfg.pipeline.first_round_preferences == "data"
    return [*(["sft"] if cfg.pipeline.run_sft else []), *(["pairs"] if first_round_data else []),
            "eval_pairs", "prompts", "eval_prompts"]
