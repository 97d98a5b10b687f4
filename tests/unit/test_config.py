"""The one config schema: YAML loading, overrides, unknown keys, ranges, cross-field rules."""

from __future__ import annotations

import json

import pytest

from rlhf_dist.cli import main
from rlhf_dist.config.cli_args import split_overrides
from rlhf_dist.config import ConfigError, RLHFConfig, load_config
from rlhf_dist.config.reference import markdown_reference


def write(tmp_path, text: str):
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_defaults_validate():
    cfg = load_config()
    assert cfg.ppo.kl.coef == 0.05 and cfg.rollout.backend == "vllm"


def test_every_shipped_preset_validates():
    from pathlib import Path

    presets = sorted(Path("configs").glob("*.yaml")) + sorted(Path("rlhf_dist/config/presets").glob("*.yaml"))
    assert presets
    for preset in presets:
        load_config(preset)


def test_unknown_key_names_file_line_and_suggestion(tmp_path):
    path = write(tmp_path, "run:\n  seed: 1\nppo:\n  kl:\n    coeff: 0.2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert f"{path}:5: ppo.kl.coeff: unknown option (did you mean 'coef'?)" in str(err.value)


def test_unknown_section_is_reported(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml:1: rolout: unknown option \(did you mean 'rollout'\?\)"):
        load_config(write(tmp_path, "rolout:\n  backend: hf\n"))


def test_out_of_range_value_names_line(tmp_path):
    path = write(tmp_path, "ppo:\n  steps: 3\n  clip_eps: 3\n")
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: ppo.clip_eps: Input should be less than 1"):
        load_config(path)


def test_all_problems_reported_at_once(tmp_path):
    path = write(tmp_path, "ppo:\n  clip_eps: 3\n  gamma: 2\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    assert len(err.value.problems) == 2


def test_wrong_literal_choice(tmp_path):
    with pytest.raises(ConfigError, match="rollout.backend: Input should be 'vllm' or 'hf'"):
        load_config(write(tmp_path, "rollout:\n  backend: sglang\n"))


def test_invalid_yaml_names_line(tmp_path):
    with pytest.raises(ConfigError, match=r"cfg.yaml:3: invalid YAML: .* \(in the block starting at line 2\)"):
        load_config(write(tmp_path, "run:\n  seed: [1\n"))


def test_dotted_overrides_apply_and_validate(tmp_path):
    cfg = load_config(None, ["ppo.kl.coef=0.1", "rollout.sampling.max_new_tokens=7", "run.name=x"])
    assert (cfg.ppo.kl.coef, cfg.rollout.sampling.max_new_tokens, cfg.run.name) == (0.1, 7, "x")
    with pytest.raises(ConfigError, match="ppo.kl.coeff: unknown option"):
        load_config(None, ["ppo.kl.coeff=0.1"])


def test_override_into_list_item():
    cfg = load_config(None, ["ppo.rewards=[{kind: function, function: 'm:f'}]"])
    assert cfg.ppo.rewards[0].kind == "function"
    with pytest.raises(ConfigError, match=r"ppo.rewards\[0\].fn: unknown option"):
        load_config(None, ["ppo.rewards=[{kind: function, fn: 'm:f'}]"])


def test_cli_style_overrides_are_split():
    assert split_overrides(["--ppo.kl.coef", "0.1", "--run.seed=3"]) == ["ppo.kl.coef=0.1", "run.seed=3"]
    with pytest.raises(ConfigError, match="needs a value"):
        split_overrides(["--ppo.kl.coef"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["ppo.policy_train.global_batch_size=6", "ppo.policy_train.micro_batch_size=4"],
         "ppo.policy_train.global_batch_size (6) must be divisible by micro_batch_size (4)"),
        (["cluster.policy.num_actors=3"], "data-parallel size (3)"),
        (["ppo.rollout_batch_size=6"], "must be a multiple of ppo.policy_train.global_batch_size (8)"),
        (["ppo.advantage=rloo"], "set rollout.sampling.samples_per_prompt >= 2"),
        (["ppo.kl.controller=adaptive"], "needs ppo.kl.target"),
        (["cluster.reward.gpus_per_actor=1"], "cluster.reward.gpus_per_actor is 1.0 but cluster.device is 'cpu'"),
        (["rollout.tensor_parallel_size=2"], "needs cluster.device 'cuda'"),
        (["ppo.policy_train.backend=torch"], "set zero_stage 0"),
        (["ppo.critic_train.offload_params=true"], "offload_params needs zero_stage 3"),
        (["ppo.rewards=[{kind: http}]"], r"ppo.rewards[0].url is required"),
        (["data.max_prompt_length=500"], "must be < data.max_length"),
    ],
)
def test_cross_field_rules(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, overrides)
    assert message in str(err.value)


def test_grpo_valid_with_group_samples():
    cfg = load_config(None, ["ppo.advantage=grpo", "rollout.sampling.samples_per_prompt=4"])
    assert cfg.ppo.advantage == "grpo"


def test_schema_every_field_documented():
    def walk(model):
        for name, field in model.model_fields.items():
            assert field.description, f"{model.__name__}.{name} has no description"
            sub = getattr(field.annotation, "model_fields", None)
            if sub is not None:
                walk(field.annotation)

    walk(RLHFConfig)
    ref = markdown_reference()
    assert "`ppo.kl.coef`" in ref and "`rollout.sampling.max_new_tokens`" in ref and "`ppo.rewards[i].url`" in ref
    # a section's own defaults, not its class's: each stage's TrainConfig sets its learning rate
    lr = {line.split("`")[1]: line.split("`")[5] for line in ref.splitlines() if line.endswith("(AdamW). |")}
    assert lr["reward.train.lr"] == repr(RLHFConfig().reward.train.lr) == "0.0005", lr
    assert lr["sft.train.lr"] == repr(RLHFConfig().sft.train.lr) and lr["dpo.train.lr"] == "5e-07", lr


def test_cli_config_validate_and_schema(tmp_path, capsys):
    assert main(["config", "validate", "--config", "configs/tiny.yaml"]) == 0
    assert "config OK" in capsys.readouterr().out
    assert main(["config", "schema"]) == 0
    schema = json.loads(capsys.readouterr().out)
    assert "ppo" in schema["properties"]
    bad = write(tmp_path, "ppo:\n  stepz: 3\n")
    assert main(["config", "validate", "--config", str(bad)]) == 2
    assert "ppo.stepz: unknown option (did you mean 'steps'?)" in capsys.readouterr().err


def test_cli_config_show_applies_overrides(capsys):
    assert main(["config", "show", "--config", "configs/tiny.yaml", "--ppo.kl.coef", "0.3"]) == 0
    assert "coef: 0.3" in capsys.readouterr().out


def test_torch_threads_default_to_whole_reserved_cpus():
    cfg = load_config(None, ["cluster.rollout.cpus_per_actor=0.25", "cluster.policy.cpus_per_actor=3.5",
                             "cluster.critic.torch_threads=4"])
    assert cfg.cluster.rollout.threads() == 1  # a fraction of a core still runs one thread
    assert cfg.cluster.policy.threads() == 3
    assert cfg.cluster.critic.threads() == 4  # explicit, independent of the 0.25 CPUs Ray reserves
