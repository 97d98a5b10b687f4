"""Driver pieces that need no cluster: packing, prompt sampling, RNG state, reward sources, shaping."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch

from rlhf_dist.algo import RunningMeanStd
from rlhf_dist.backends.rollout import RolloutSample
from rlhf_dist.config import PPOConfig, RewardSource
from rlhf_dist.data.experience import Experience, InferenceOutputs, ModelInputs, RolloutBatch, pack_samples
from rlhf_dist.driver.rewards import RewardError, combine_rewards
from rlhf_dist.driver.experience import make_experience
from rlhf_dist.driver.state import PromptSampler, rng_state, set_rng_state


def sample(prompt, response, logprobs=None):
    return RolloutSample(prompt_ids=prompt, response_ids=response,
                         logprobs=logprobs or [-1.0] * len(response), finish_reason="stop")


def test_pack_samples_left_pads_prompts_right_pads_responses():
    inputs, lp = pack_samples([sample([5, 6], [7, 8, 9]), sample([4], [3])], pad_id=0)
    assert inputs.sequences.tolist() == [[5, 6, 7, 8, 9], [0, 4, 3, 0, 0]]
    assert inputs.attention_mask.tolist() == [[1, 1, 1, 1, 1], [0, 1, 1, 0, 0]]
    assert inputs.action_mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    assert lp.tolist() == [[-1, -1, -1], [-1, 0, 0]]
    assert inputs.response_width == 3 and len(inputs) == 2


def _experience(n: int) -> Experience:
    rows = torch.arange(n, dtype=torch.float32).unsqueeze(1)  # row i holds i everywhere
    per_token = rows.repeat(1, 2)  # [n, R=2]
    return Experience(rows.long().repeat(1, 3), torch.ones(n, 3, dtype=torch.long), torch.ones(n, 2),
                      *(per_token * k for k in range(1, 7)), rows.squeeze(1), per_token * 7)


def test_shard_splits_every_field_consistently_and_concat_restores():
    exp = _experience(5)
    parts = exp.shard(2)
    assert [len(p) for p in parts] == [3, 2]
    assert parts[1].sequences[:, 0].tolist() == [3, 4] and parts[1].returns[:, 0].tolist() == [18.0, 24.0]
    assert parts[1].scores.tolist() == [3.0, 4.0]
    assert isinstance(parts[0], Experience)
    joined = Experience.concat(parts)
    assert all(torch.equal(getattr(joined, f), getattr(exp, f)) for f in ("sequences", "advantages", "scores"))


def test_select_and_inputs_keep_only_what_is_asked():
    exp = _experience(4)
    mb = exp.select(torch.tensor([3, 0]))
    assert mb.old_logprobs[:, 0].tolist() == [3.0, 0.0] and mb.values[:, 0].tolist() == [9.0, 0.0]
    inputs = exp.inputs()
    assert type(inputs) is ModelInputs and not hasattr(inputs, "advantages")


def test_prompt_sampler_covers_each_epoch_and_resumes_exactly():
    a = PromptSampler(5, seed=3)
    first = a.next(3) + a.next(3)
    assert sorted(first[:5]) == [0, 1, 2, 3, 4]  # one full epoch before any repeat
    b = PromptSampler(5, seed=3)
    b.next(3)
    resumed = PromptSampler(5, seed=3, **b.state_dict())
    assert resumed.next(3) == first[3:]


def test_rng_state_round_trip():
    state = rng_state()
    x = torch.rand(3)
    set_rng_state(json.loads(json.dumps(state)))
    assert torch.equal(torch.rand(3), x)


def failing_reward(prompts, responses):
    if any("boom" in r for r in responses):
        raise ValueError("cannot score")
    return [1.0] * len(responses)


def test_reward_function_that_raises_names_the_sample():
    src = [RewardSource(kind="function", function="tests.unit.test_driver_pure:failing_reward")]
    with pytest.raises(RewardError, match=r"raised on sample 1 \(prompt 'p1'.*'boom'"):
        combine_rewards(src, ["p0", "p1"], ["fine", "boom"], None)


def test_reward_function_bad_output_and_missing_module():
    with pytest.raises(RewardError, match="cannot be loaded"):
        combine_rewards([RewardSource(kind="function", function="no_such_mod:f")], ["p"], ["r"], None)
    src = [RewardSource(kind="function", function="math:fsum")]  # wrong arity/shape
    with pytest.raises(RewardError):
        combine_rewards(src, ["p"], ["r"], None)


class _Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        reply = json.dumps({"rewards": [float(len(r)) for r in body["responses"]]}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def test_http_reward_and_weighted_sum_with_a_real_local_server():
    server = HTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_port}/score"
        sources = [RewardSource(kind="http", url=url, weight=0.5),
                   RewardSource(kind="function", function="rlhf_dist.eval.rules:length_reward", weight=2.0)]
        total, parts = combine_rewards(sources, ["p", "q"], ["abcd", "ab"], None)
        # 0.5 * len + 2 * len/100
        assert torch.allclose(total, torch.tensor([0.5 * 4 + 2 * 0.04, 0.5 * 2 + 2 * 0.02]))
        assert parts["reward/http0"] == pytest.approx(3.0)
    finally:
        server.shutdown()


def test_unreachable_http_reward_fails_after_bounded_retries():
    src = [RewardSource(kind="http", url="http://127.0.0.1:9/none", max_retries=1, timeout_s=0.5)]
    with pytest.raises(RewardError, match=r"failed after 2 attempts"):
        combine_rewards(src, ["p"], ["r"], None)


def _batch():
    inputs, lp = pack_samples([sample([5], [6, 7]), sample([5], [8]), sample([4], [6]), sample([4], [9, 9])], 0)
    return RolloutBatch(inputs, lp, ["a", "a", "b", "b"], ["x", "y", "z", "w"])


def test_make_experience_rloo_uses_kl_shaped_sequence_reward():
    batch = _batch()
    zeros = torch.zeros_like(batch.inputs.action_mask)
    inference = InferenceOutputs(old_logprobs=zeros, ref_logprobs=zeros, values=zeros)
    cfg = PPOConfig(advantage="rloo", reward_clip=None)
    exp, stats = make_experience(cfg, batch, inference, torch.tensor([1.0, 3.0, 0.0, 2.0]), 0.1, RunningMeanStd(), 2)
    # zero KL: RLOO in groups {1,3} and {0,2} -> [-2, 2, -2, 2] on every valid token
    assert exp.advantages[:, 0].tolist() == [-2.0, 2.0, -2.0, 2.0]
    assert exp.advantages[1, 1] == 0  # padding stays 0
    assert stats["kl/seq_k1"] == 0.0


def test_make_experience_gae_puts_score_minus_kl_on_last_token():
    batch = _batch()
    old = torch.full_like(batch.inputs.action_mask, -1.0)
    ref = torch.full_like(batch.inputs.action_mask, -1.5)  # k1 = 0.5 per token
    inference = InferenceOutputs(old_logprobs=old, ref_logprobs=ref, values=torch.zeros_like(old))
    cfg = PPOConfig(advantage="gae", whiten_advantages=False, reward_clip=None)
    exp, stats = make_experience(cfg, batch, inference, torch.tensor([1.0, 1.0, 1.0, 1.0]), 0.1, RunningMeanStd(), 1)
    # row 0 has 2 tokens: rewards [-0.05, 1 - 0.05]
    assert exp.rewards[0].tolist() == pytest.approx([-0.05, 0.95])
    assert stats["kl/seq_k1"] == pytest.approx((1.0 + 0.5 + 0.5 + 1.0) / 4)


def test_weight_buckets_only_cut_between_layers():
    from rlhf_dist.backends.sync.buckets import layer_of

    assert layer_of("model.layers.3.self_attn.q_proj.weight") == "model.layers.3"
    assert layer_of("model.layers.3.mlp.up_proj.weight") == "model.layers.3"
    assert layer_of("lm_head.weight") == "lm_head.weight"
    assert layer_of("transformer.h.11.attn.c_attn.weight") == "transformer.h.11"


def _meta(name: str, *shape: int, dtype: str = "torch.float32"):
    from rlhf_dist.backends.sync.buckets import TensorMeta

    return TensorMeta(name, dtype, shape)


def test_bucket_plan_keeps_layers_whole_and_respects_the_limit():
    from rlhf_dist.backends.sync.buckets import plan_buckets

    # embed 4 KiB; each layer: q 1 KiB + k 1 KiB + mlp 2 KiB = 4 KiB; a 5 KiB limit fits one layer per bucket
    params = [_meta("model.embed_tokens.weight", 32, 32)]
    for i in range(3):
        params += [_meta(f"model.layers.{i}.self_attn.q_proj.weight", 16, 16),
                   _meta(f"model.layers.{i}.self_attn.k_proj.weight", 16, 16),
                   _meta(f"model.layers.{i}.mlp.up_proj.weight", 16, 32)]
    params += [_meta("model.norm.weight", 16), _meta("lm_head.weight", 32, 32)]
    buckets = plan_buckets(params, 5 * 1024, dropped=frozenset({"lm_head.weight"}))
    assert [len(b.tensors) for b in buckets] == [1, 3, 3, 4]  # the last layer and the final norm share one
    assert [b.nbytes for b in buckets] == [4096, 4096, 4096, 4096 + 64]
    assert all(len({n.split(".")[2] for n in b.sources if ".layers." in n}) <= 1 for b in buckets)
    assert "lm_head.weight" not in [t.name for b in buckets for t in b.tensors]  # tied: engines re-tie it
    # a 1-byte limit still never splits a layer
    assert [len(b.tensors) for b in plan_buckets(params, 1)] == [1, 3, 3, 3, 1, 1]


def test_bucket_plan_gathers_lora_with_its_layer_but_sends_only_merged_names():
    from rlhf_dist.backends.sync.buckets import plan_buckets

    base = "base_model.model.model.layers.0.self_attn.q_proj"
    params = [_meta("base_model.model.model.embed_tokens.weight", 8, 4),
              _meta(f"{base}.base_layer.weight", 4, 4), _meta(f"{base}.lora_A.default.weight", 2, 4),
              _meta(f"{base}.lora_B.default.weight", 4, 2)]
    buckets = plan_buckets(params, 1)
    assert [t.name for t in buckets[1].tensors] == ["model.layers.0.self_attn.q_proj.weight"]
    assert buckets[1].sources == [p.name for p in params[1:]]  # A and B travel to the merge, not to the engine
    assert buckets[1].nbytes == 4 * 4 * 4


def test_nccl_sync_rule_needs_cuda():
    from rlhf_dist.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="sync_backend 'nccl' needs cluster.device 'cuda'"):
        load_config(None, ["rollout.sync_backend=nccl"])
