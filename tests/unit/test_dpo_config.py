"""The `dpo:` section (config/schema_dpo.py), its rules (config/checks.py), its generated reference, and the
mistakes `rlhf-dist dpo` refuses in one line before it writes anything."""

from __future__ import annotations

import json

import pytest

from rlhf_dist.algo.dpo_registry import DPO_LOSSES
from rlhf_dist.cli import main
from rlhf_dist.config import ConfigError, load_config
from rlhf_dist.config.reference import markdown_reference
from rlhf_dist.config.schema_dpo import DPOStageConfig


def test_defaults_and_every_option_documented():
    cfg = load_config(None, [])
    assert (cfg.dpo.loss, cfg.dpo.beta, cfg.dpo.label_smoothing, cfg.dpo.simpo_gamma, cfg.dpo.epochs) == (
        "sigmoid", 0.1, 0.0, 0.5, 1)
    reference = markdown_reference()
    for name, field in DPOStageConfig.model_fields.items():
        assert field.description and len(field.description) > 20, name
        prefix = f"| `dpo.{name}" if name != "train" else "| `dpo.train.lr` "
        assert prefix in reference, name
    row = next(line for line in reference.splitlines() if line.startswith("| `dpo.loss` "))
    for name in DPO_LOSSES.names():
        assert f"'{name}'" in row
    assert "'simpo' (reference_free)" in row


@pytest.mark.parametrize("overrides, message", [
    ({"dpo.loss": "dpoo"}, "dpo.loss: unknown DPO loss 'dpoo' (known: ipo, robust, sigmoid, simpo"),
    ({"dpo.loss": "robust"}, "dpo.loss 'robust' needs dpo.label_smoothing > 0"),
    ({"dpo.label_smoothing": 0.5}, "dpo.label_smoothing: Input should be less than 0.5"),
    ({"dpo.beta": 0}, "dpo.beta: Input should be greater than 0"),
    ({"dpo.train.global_batch_size": 6, "cluster.policy.num_actors": 2},
     "dpo.train.global_batch_size (6) must be divisible by micro_batch_size (2) x data-parallel size (2) = 4"),
    ({"dpo.train.backend": "torch"}, "dpo.train.backend 'torch' is single-process: set zero_stage 0"),
    ({"dpo.loss": "rlhf_dist.algo.dpo:reduce_dpo"}, "is not registered: decorate it with @DPO_LOSSES.register"),
])
def test_impossible_combinations_are_refused(overrides, message):
    with pytest.raises(ConfigError) as err:
        load_config(None, [f"{k}={v}" for k, v in overrides.items()])
    assert message in str(err.value)


def test_a_plugin_loss_by_module_and_function():
    cfg = load_config(None, ["dpo.loss=rlhf_dist.algo.dpo_losses.ipo:ipo_loss"])
    assert DPO_LOSSES.get(cfg.dpo.loss).name == "ipo"


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return rc, err


def test_bad_inputs_are_one_line_and_write_nothing(tmp_path, capsys, tiny_llama_dir):
    run = tmp_path / "run"
    good = tmp_path / "good.jsonl"
    good.write_text("".join(json.dumps({"prompt": "p", "chosen": f"good {i}", "rejected": "bad"}) + "\n"
                            for i in range(4)))
    base = ["dpo", "--policy.path", str(tiny_llama_dir), "--run.output_dir", str(run), "--data.eval_pairs_path",
            str(good), "--dpo.train.global_batch_size", "2", "--dpo.train.micro_batch_size", "1"]
    rc, err = _run(capsys, base + ["--data.pairs_path", str(tmp_path / "nope.jsonl")])
    assert rc == 3 and f"{tmp_path / 'nope.jsonl'}: data file not found (data.pairs_path" in err
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"prompt": "p", "chosen": "a"}) + "\n")
    rc, err = _run(capsys, base + ["--data.pairs_path", str(bad)])
    assert rc == 3 and f"{bad}:1: rejected: missing required field" in err
    rc, err = _run(capsys, base + ["--data.pairs_path", str(good), "--dpo.train.global_batch_size", "8",
                                   "--dpo.train.micro_batch_size", "2"])
    assert rc == 3 and "4 training pairs is fewer than one global batch (dpo.train.global_batch_size = 8)" in err
    rc, err = _run(capsys, base + ["--data.pairs_path", str(good), "--resume"])
    assert rc == 2 and f"checkpoint.resume: no complete checkpoint in {run / 'checkpoints'}" in err
    rc, err = _run(capsys, base + ["--data.pairs_path", str(good), "--dpo.loss", "ipo0"])
    assert rc == 2 and "dpo.loss: unknown DPO loss 'ipo0'" in err
    rc, err = _run(capsys, base + ["--data.pairs_path", str(good), "--policy.path", str(tmp_path / "no-model")])
    assert rc != 0 and "policy.path" in err
    assert not run.exists()
