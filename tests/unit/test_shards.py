"""A model dir written piece by piece (models/shards.py, ScalarHeadModel.save_config_files) is the dir that
save_pretrained writes: same config files, same tensors under the same names, and it loads the same.

This is what the bucketed ZeRO-3 export (TrainWorker.export_hf) writes; tests/integration/test_bounded_memory.py
runs that export on two ranks.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModel, AutoModelForCausalLM, BertConfig, BertModel

from rlhf_dist.models import ScalarHeadModel, build_byte_tokenizer
from rlhf_dist.models.scalar_head import HEAD_META, HEAD_WEIGHTS
from rlhf_dist.models.shards import INDEX_FILE, SINGLE_FILE, ShardWriter, save_config_files, share_weights


def _tensors(out: Path) -> dict[str, torch.Tensor]:
    files = sorted(out.glob("model*.safetensors"))
    return {k: v for f in files for k, v in load_file(f).items()}


def _config(out: Path, name: str = "config.json") -> dict:
    config = json.loads((out / name).read_text())
    config.pop("transformers_version", None)
    return config


def _write_in_pieces(state: dict[str, torch.Tensor], out: Path, pieces: int) -> list[Path]:
    names = list(state)
    writer = ShardWriter(out)
    for i in range(pieces):
        writer.write({n: state[n] for n in names[i::pieces]})
    writer.write({})  # an empty bucket writes nothing
    return writer.close()


def test_shards_get_hf_names_and_an_index_and_one_shard_is_model_safetensors(tmp_path):
    flat = torch.arange(12.0)  # views of one buffer, as gathered ZeRO-3 weights are
    state = {"a.weight": flat[:4].view(2, 2), "b.weight": flat[4:8], "c.weight": flat[8:]}
    files = _write_in_pieces(state, tmp_path / "three", 3)
    assert [f.name for f in files] == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "three" / INDEX_FILE).read_text())
    assert index["metadata"]["total_size"] == 12 * 4
    assert index["weight_map"] == {"a.weight": files[0].name, "b.weight": files[1].name, "c.weight": files[2].name}
    assert all(torch.equal(_tensors(tmp_path / "three")[k], v) for k, v in state.items())
    assert [f.name for f in _write_in_pieces(state, tmp_path / "one", 1)] == [SINGLE_FILE]
    assert not (tmp_path / "one" / INDEX_FILE).exists()
    # a re-export into the same dir replaces the old shards instead of mixing with them
    _write_in_pieces(state, tmp_path / "three", 1)
    assert sorted(p.name for p in (tmp_path / "three").iterdir()) == [SINGLE_FILE]


def test_a_tensor_written_twice_or_nothing_written_is_refused(tmp_path):
    writer = ShardWriter(tmp_path)
    writer.write({"a": torch.zeros(2)})
    with pytest.raises(ValueError, match="written twice"):
        writer.write({"a": torch.ones(2)})
    with pytest.raises(ValueError, match="no weights"):
        ShardWriter(tmp_path / "empty").close()


def test_causal_lm_in_pieces_equals_save_pretrained(tiny_llama_dir, tmp_path):
    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir, dtype=torch.bfloat16)
    model.save_pretrained(tmp_path / "hf")
    _write_in_pieces(model.state_dict(), tmp_path / "ours", 3)
    save_config_files(model, tmp_path / "ours")
    assert _config(tmp_path / "ours") == _config(tmp_path / "hf")
    assert _config(tmp_path / "ours", "generation_config.json") == _config(tmp_path / "hf", "generation_config.json")
    theirs, ours = _tensors(tmp_path / "hf"), _tensors(tmp_path / "ours")
    assert theirs.keys() == ours.keys() and all(torch.equal(theirs[k], ours[k]) for k in theirs)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path / "ours")
    assert loaded.dtype == torch.bfloat16 and torch.equal(loaded.lm_head.weight, model.lm_head.weight)


def _streamed(model: ScalarHeadModel, out: Path, tokenizer) -> None:
    """What CriticWorker.export_hf does with each gathered bucket, on a whole model."""
    backbone_prefix, head_prefix = model.saved_weight_prefixes()
    state = {backbone_prefix + k: v for k, v in model.backbone.state_dict().items()}
    if head_prefix is not None:
        state.update({head_prefix + k: v for k, v in model.head.state_dict().items()})
    _write_in_pieces(state, out, 2)
    model.save_config_files(out, tokenizer)
    if head_prefix is None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in model.head.state_dict().items()}, out / HEAD_WEIGHTS)


@pytest.mark.parametrize("kind", ["decoder-last", "decoder-mean", "encoder"])
def test_scalar_head_in_pieces_equals_save_pretrained(tiny_llama_dir, tmp_path, kind):
    torch.manual_seed(0)
    if kind == "encoder":
        backbone = BertModel(BertConfig(vocab_size=259, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                        intermediate_size=64, max_position_embeddings=64))
    else:
        backbone = AutoModel.from_pretrained(tiny_llama_dir)
    model = ScalarHeadModel(backbone, pooling="last" if kind == "decoder-last" else "mean").eval()
    tokenizer = build_byte_tokenizer()
    model.save_pretrained(tmp_path / "hf", tokenizer)
    _streamed(model, tmp_path / "ours", tokenizer)
    hf, ours = tmp_path / "hf", tmp_path / "ours"
    for name in ("config.json", "tokenizer_config.json", HEAD_META):
        assert _config(ours, name) == _config(hf, name), name
    theirs, mine = _tensors(hf), _tensors(ours)
    assert theirs.keys() == mine.keys() and all(torch.equal(theirs[k], mine[k]) for k in theirs)
    assert (hf / HEAD_WEIGHTS).exists() == (ours / HEAD_WEIGHTS).exists() == (kind != "decoder-last")
    ids = torch.randint(3, 259, (2, 7), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    with torch.no_grad():
        torch.testing.assert_close(ScalarHeadModel.from_pretrained(ours).eval()(ids, mask), model(ids, mask))


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_exported_weights_take_the_umask_like_every_other_file(tmp_path, umask, mode):
    # safetensors 0.8 creates its files 0600: other users of a shared run dir could not read an export
    old = os.umask(umask)
    try:
        writer = ShardWriter(tmp_path / "out")
        writer.write({"a": torch.ones(2)})
        writer.write({"b": torch.zeros(3)})
        files = writer.close()
        (tmp_path / "out" / "extra.safetensors").write_bytes(b"")
        os.chmod(tmp_path / "out" / "extra.safetensors", 0o600)
        share_weights(tmp_path / "out")
    finally:
        os.umask(old)
    assert len(files) == 2
    assert {p.name: oct(p.stat().st_mode & 0o777) for p in (tmp_path / "out").glob("*.safetensors")} == {
        **{p.name: oct(mode) for p in files}, "extra.safetensors": oct(mode)}
