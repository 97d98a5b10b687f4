"""transformers `generate` rollout engine: no vLLM needed; slower, but runs any HF causal LM."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import torch
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    LogitsProcessor,
    LogitsProcessorList,
)

from rlhf_dist.backends.rollout.base import (
    RolloutEngine,
    RolloutSample,
    request_seeds,
    stop_token_ids,
)
from rlhf_dist.backends.sync.weight_buckets import check_named_tensors
from rlhf_dist.config.schema_parts import RolloutConfig, SamplingConfig

ROWS_PER_CHUNK = 32  # sequences per generate() call: bounds activation + KV memory


class RawLogprobRecorder(LogitsProcessor):
    """Records log p(sampled token) from the RAW logits, one step late, in O(rows x vocab) memory.

    Passed as `logits_processor`, it runs before temperature/top-k/top-p (transformers appends
    those warpers after custom processors) and, with the engine's neutral generation config, no
    other processor runs before it. At step t it sees the token sampled at t-1 as input_ids[:, -1].
    (`output_logits=True` would also give raw logits, but keeps [rows, T, vocab] alive.)
    """

    def __init__(self) -> None:
        self.prev: torch.Tensor | None = None  # [C, V] log_softmax of the previous step
        self.steps: list[torch.Tensor] = []  # T-1 tensors [C]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.prev is not None:
            self.steps.append(self.prev.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.prev = torch.log_softmax(scores.float(), dim=-1)
        return scores

    def finish(self, last_tokens: torch.Tensor) -> torch.Tensor:
        """[C] last sampled tokens -> [C, T] logprobs of every sampled token."""
        assert self.prev is not None, "generate() made no step"
        self.steps.append(self.prev.gather(-1, last_tokens[:, None]).squeeze(-1))
        return torch.stack(self.steps, dim=1)


class HFEngine(RolloutEngine):
    """Samples with `model.generate` on left-padded chunks; logprobs from the raw logits."""

    def __init__(
        self, model_dir: str | Path, cfg: RolloutConfig, device: Literal["cpu", "cuda"], dtype: str, seed: int
    ):
        self.cfg = cfg  # seed: unused, generate() seeds every call
        self.device = torch.device(device)
        self.model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=getattr(torch, dtype))
        self.model.to(self.device).eval().requires_grad_(False)
        # generate() fills unset options from model.generation_config (repetition_penalty, top_k, ...
        # of the checkpoint); a neutral one makes SamplingConfig the only source of sampling settings.
        self.model.generation_config = GenerationConfig()
        tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
        self.stop_ids = stop_token_ids(model_dir)
        pad = tokenizer.pad_token_id
        self.pad_id = int(pad if pad is not None else self.stop_ids[0])
        self.shapes = {name: tuple(t.shape) for name, t in self.model.state_dict().items()}

    def _generation_config(self, sampling: SamplingConfig) -> GenerationConfig:
        """Every sampling knob set explicitly (unset ones take transformers' defaults, e.g. top_k=50)."""
        return GenerationConfig(
            do_sample=True,
            max_new_tokens=sampling.max_new_tokens,
            min_new_tokens=0,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=max(sampling.top_k, 0),  # 0 disables
            typical_p=1.0,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            eos_token_id=None if sampling.ignore_eos else self.stop_ids,
            pad_token_id=self.pad_id,
        )

    @torch.no_grad()
    def generate(
        self, prompt_ids: list[list[int]], sampling: SamplingConfig, seed: int
    ) -> list[list[RolloutSample]]:
        """[B][P_i] prompts -> [B][samples_per_prompt] samples (see RolloutEngine.generate)."""
        n = sampling.samples_per_prompt
        rows = [p for p in prompt_ids for _ in range(n)]  # row r = prompt r // n
        gen_cfg = self._generation_config(sampling)
        stop_ids = [] if sampling.ignore_eos else self.stop_ids
        starts = list(range(0, len(rows), ROWS_PER_CHUNK))
        samples: list[RolloutSample] = []
        for start, chunk_seed in zip(starts, request_seeds(seed, len(starts))):
            # fork_rng: seeding must not disturb the caller's global torch RNG stream
            cuda_ids = [torch.cuda.current_device()] if self.device.type == "cuda" else []
            with torch.random.fork_rng(devices=cuda_ids):
                torch.manual_seed(chunk_seed)
                samples.extend(self._generate_chunk(rows[start : start + ROWS_PER_CHUNK], gen_cfg, stop_ids))
        return [samples[i * n : (i + 1) * n] for i in range(len(prompt_ids))]

    def _generate_chunk(self, prompts: list[list[int]], gen_cfg: GenerationConfig,
                        stop_ids: list[int]) -> list[RolloutSample]:
        """Left-pad [C][P_i] prompts to [C, P], sample, cut each row at its first stop id."""
        width = max(len(p) for p in prompts)
        input_ids = torch.full((len(prompts), width), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(prompts), width), dtype=torch.long)
        for i, p in enumerate(prompts):
            input_ids[i, width - len(p) :] = torch.tensor(p, dtype=torch.long)
            attention_mask[i, width - len(p) :] = 1
        recorder = RawLogprobRecorder()
        sequences = self.model.generate(
            input_ids=input_ids.to(self.device),
            attention_mask=attention_mask.to(self.device),
            generation_config=gen_cfg,
            logits_processor=LogitsProcessorList([recorder]),
        )
        token_logprobs = recorder.finish(sequences[:, -1]).cpu()  # [C, T]
        response = sequences[:, width:].cpu()  # [C, T]
        stops = torch.tensor(stop_ids, dtype=torch.long)
        samples = []
        for i, p in enumerate(prompts):
            is_stop = torch.isin(response[i], stops).nonzero()
            length = int(is_stop[0]) + 1 if len(is_stop) else response.shape[1]
            samples.append(
                RolloutSample(
                    prompt_ids=list(p),
                    response_ids=response[i, :length].tolist(),
                    logprobs=token_logprobs[i, :length].tolist(),
                    finish_reason="stop" if len(is_stop) else "length",
                )
            )
        return samples

    def update_weights(self, named_tensors: list[tuple[str, torch.Tensor]]) -> None:
        """Copy HF-named tensors into the model in place (any subset; see RolloutEngine)."""
        check_named_tensors(named_tensors, self.shapes)
        self.model.load_state_dict(dict(named_tensors), strict=False)

    def reset_prefix_cache(self) -> None:
        """No cross-call KV cache in transformers generate: nothing to drop."""

    def shutdown(self) -> None:
        self.model = None  # type: ignore[assignment]
        if self.device.type == "cuda":
            torch.cuda.empty_cache()
