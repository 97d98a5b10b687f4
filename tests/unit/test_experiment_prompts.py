"""The seed experiments' PPO arms ask for one sentence on the built-in prompts (room for a length reward)."""

from __future__ import annotations

import json

from rlhf_dist.config import with_overrides
from rlhf_dist.data.demo import demo_prompts
from rlhf_dist.eval.cli import experiments_config
from rlhf_dist.eval.experiments.common import BRIEF_INSTRUCTION, arm_config, function_source


def _prompts(path: str) -> list[str]:
    with open(path) as f:
        return [json.loads(line)["prompt"] for line in f]


def test_arm_uses_builtin_prompts_asking_for_one_sentence(tmp_path):
    cfg = with_overrides(experiments_config(), {"data.demo_size": 8, "run.seed": 3}, source="test")
    arm = arm_config(cfg, tmp_path / "arm", "kl0", [function_source("rlhf_dist.eval.rules:length_reward")], 0.0)
    for path, split in ((arm.data.prompts_path, "train"), (arm.data.eval_prompts_path, "eval")):
        assert path.startswith(str(tmp_path / "arm" / "prompts"))
        expected = [p.prompt + BRIEF_INSTRUCTION for p in demo_prompts(8, seed=3, split=split)]
        assert _prompts(path) == expected
    assert _prompts(arm.data.prompts_path) != _prompts(arm.data.eval_prompts_path)  # held out stays held out
    assert arm.ppo.kl.coef == 0.0 and arm.ppo.kl.controller == "fixed"


def test_arm_keeps_the_users_prompts(tmp_path):
    mine = tmp_path / "mine.jsonl"
    mine.write_text(json.dumps({"prompt": "Tell me a long story."}) + "\n")
    cfg = with_overrides(experiments_config(), {"data.prompts_path": str(mine)}, source="test")
    arm = arm_config(cfg, tmp_path / "arm", "helpful", [function_source("rlhf_dist.eval.rules:helpful_reward")])
    assert arm.data.prompts_path == str(mine)  # only the unset held-out split gets the built-in brief prompts
    assert _prompts(arm.data.eval_prompts_path)[0].endswith(BRIEF_INSTRUCTION)
    assert not (tmp_path / "arm" / "prompts" / "train.jsonl").exists()
