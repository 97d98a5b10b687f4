"""Trainable roles: the policy and the critic, each a DeepSpeed (or torch) data-parallel group.

Each rank gets an equal shard of the experience batch, runs `ppo_epochs` passes of
micro-batches, and the engine averages gradients across ranks at every accumulation
boundary (one optimizer step per global mini-batch).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import torch

from rlhf_dist.algo import (masked_mean, ppo_policy_loss, resolve_loss_aggregation, truncated_is_weights,
                             value_loss)
from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta, hf_name, plan_buckets
from rlhf_dist.backends.train.base import TrainEngine
from rlhf_dist.backends.train.factory import build_train_engine
from rlhf_dist.config.roles import critic_dtype, inference_chunk_size
from rlhf_dist.config.schema_parts import TrainConfig
from rlhf_dist.data.experience import Experience, ModelInputs, TrainStats
from rlhf_dist.models import load_causal_lm, load_critic, load_tokenizer, merge_lora
from rlhf_dist.models.lora import merged_state_dict
from rlhf_dist.models.forward import chunked_response_logprobs, response_logprobs, response_values
from rlhf_dist.workers.base import RoleWorker
from rlhf_dist.workers.tensor_wire import WireTensor, tensors_to_wire

# The HF name of the output projection that tied-embedding models share with embed_tokens.
TIED_LM_HEAD = "lm_head.weight"


def _micro_batches(batch: Experience, size: int, order: torch.Tensor) -> Iterator[Experience]:
    for start in range(0, len(order), size):
        yield batch.select(order[start : start + size])


def _mean_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    return {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)) for k in keys}


class TrainWorker(RoleWorker):
    """Shared loop of policy and critic: shuffle, micro-batch, backward, step, guard."""

    engine: TrainEngine
    train_cfg: TrainConfig

    def _build_engine(self, model: torch.nn.Module, total_updates: int, dtype: str) -> None:
        self.engine = build_train_engine(model, self.train_cfg, total_updates, dtype, self.world_size, self.device.type)

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    def train_ppo(self, shard: Experience, step: int) -> TrainStats:
        """PPO epochs over this rank's shard; returns mean stats, skipped updates and this rank's own
        training time (the driver collects groups one after another)."""
        started = time.perf_counter()
        self.engine.train()
        shard = shard.to(self.device)
        n = len(shard)
        gen = torch.Generator().manual_seed(self.cfg.run.seed * 1_000_003 + step * 7919 + self.rank)
        rows, skipped_before = [], self.engine.skipped_updates
        for _ in range(self.cfg.ppo.ppo_epochs):
            order = torch.randperm(n, generator=gen)
            for mb in _micro_batches(shard, self.train_cfg.micro_batch_size, order):
                loss, stats = self._loss(mb)
                self.engine.backward(loss)
                info = self.engine.step()
                if info.boundary and info.grad_norm is not None:
                    stats[f"{self.role}/grad_norm"] = info.grad_norm
                rows.append(stats)
        return TrainStats(_mean_stats(rows), self.engine.skipped_updates - skipped_before,
                          time.perf_counter() - started)

    def save_checkpoint(self, directory: str, tag: str) -> None:
        self.engine.save_checkpoint(Path(directory), tag)

    def load_checkpoint(self, directory: str, tag: str) -> None:
        self.engine.load_checkpoint(Path(directory), tag)


class PolicyWorker(TrainWorker):
    def init_model(self, model_dir: str, total_updates: int) -> int:
        self.train_cfg = self.cfg.ppo.policy_train
        self.model_dir = model_dir
        model = load_causal_lm(self.cfg.policy, model_dir, trainable=True)
        # A tied lm_head is the embedding again: engines re-tie it, so weight sync leaves it out.
        lm_head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
        self._tied_lm_head = lm_head is not None and lm_head.weight is embedding.weight
        self._build_engine(model, total_updates, self.cfg.policy.dtype)
        return sum(p.numel() for p in model.parameters())

    def logprobs(self, inputs: ModelInputs) -> torch.Tensor:
        """Log-probs of the response tokens under the current policy: [B, R]."""
        self.engine.eval()
        return chunked_response_logprobs(self.engine.model, inputs.sequences, inputs.attention_mask,
                                         inputs.response_width, inference_chunk_size(self.cfg))[0]

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        ppo = self.cfg.ppo
        # entropy is always measured (a report panel and a collapse signal); it enters the loss only with a coef
        logprobs, entropy = response_logprobs(self.engine.model, mb.sequences, mb.attention_mask, mb.response_width,
                                              with_entropy=True)
        is_weights = None
        if ppo.tis_cap is not None and ppo.old_logprobs == "recompute":
            # Truncated IS: the samples came from the engine's policy, the ratio is against the recomputed one.
            is_weights, _ = truncated_is_weights(mb.old_logprobs, mb.behaviour_logprobs, mb.action_mask, ppo.tis_cap)
        aggregation = resolve_loss_aggregation(ppo.loss_aggregation, ppo.advantage, ppo.policy_loss)
        loss, stats = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.action_mask, ppo.clip_eps,
                                      ppo.dual_clip, ppo.policy_loss, aggregation, is_weights)
        out = {f"policy/{k}": float(v) for k, v in stats.items()}
        ent = masked_mean(entropy, mb.action_mask)
        if ppo.entropy_coef > 0:
            loss = loss - ppo.entropy_coef * ent
        out["policy/entropy"] = float(ent.detach())
        out["policy/loss"] = float(loss.detach())
        return loss, out

    # ---- weight sync (backends/sync): one bucket of whole layers at a time ----
    def weight_sync_plan(self, bucket_mb: int) -> list[Bucket]:
        """The buckets of a sync, from parameter metadata alone (every rank computes the same plan)."""
        params = [TensorMeta(name, dtype, shape) for name, shape, dtype in self.engine.parameter_specs()]
        dropped = frozenset({TIED_LM_HEAD}) if self._tied_lm_head else frozenset()
        self._sync_plan = plan_buckets(params, bucket_mb * 2**20, dropped)
        return self._sync_plan

    @contextmanager
    def _bucket_tensors(self, index: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Bucket `index` as HF-named tensors (LoRA folded in). A collective under ZeRO-3: all ranks
        gather just this bucket's parameters, and release them when the block ends."""
        bucket = self._sync_plan[index]
        with self.engine.gathered(bucket.sources) as full:
            if self.cfg.policy.lora.enabled:
                full = merged_state_dict(full, self.cfg.policy.lora)
            else:
                full = {hf_name(name): tensor for name, tensor in full.items()}
            yield [(meta.name, full[meta.name]) for meta in bucket.tensors]

    def weight_bucket(self, index: int) -> list | None:
        """Object store: rank 0 puts its bucket (numpy arrays, workers/tensor_wire.py) into the store while
        the gathered weights still exist (one copy, straight into shared memory) and returns [ref]; None
        elsewhere. The engines fetch the bucket from the store (RolloutWorker.update_weights)."""
        import ray

        with self._bucket_tensors(index) as tensors:
            return [ray.put(tensors_to_wire(tensors))] if self.rank == 0 else None

    def weight_broadcast_rendezvous(self) -> tuple[str, int]:
        return self.rendezvous()

    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> None:
        """NCCL (CUDA): rank 0 joins the group of the vLLM workers (backends/rollout/nccl_sync.py)."""
        from rlhf_dist.backends.rollout.nccl_sync import NcclSender

        self._sender = NcclSender(host, port, world_size)

    def broadcast_weight_bucket(self, index: int) -> None:
        """NCCL: every rank gathers bucket `index` (collective under ZeRO-3); rank 0 broadcasts it."""
        with self._bucket_tensors(index) as tensors:
            if self.rank == 0:
                self._sender.send(tensors)

    def share_weight_bucket(self, index: int) -> tuple[str, list]:
        """CUDA IPC: gather bucket `index` and share it with the engine on this GPU; it stays alive
        until release_weight_bucket (both collective under ZeRO-3)."""
        from rlhf_dist.backends.sync.cuda_ipc import share_tensors

        self._held = ExitStack()
        tensors = self._held.enter_context(self._bucket_tensors(index))
        self._held_tensors = [(name, t.contiguous()) for name, t in tensors]
        return share_tensors(self._held_tensors)

    def release_weight_bucket(self) -> None:
        self._held_tensors = []
        self._held.close()

    def _hf_state_dict(self, copy: bool = True) -> dict[str, torch.Tensor]:
        """HF-named full weights of the policy (what vLLM and save_pretrained expect)."""
        if not self.cfg.policy.lora.enabled:
            return self.engine.full_state_dict(copy)
        return merged_state_dict(self.engine.full_state_dict(copy), self.cfg.policy.lora)

    def export_hf(self, out_dir: str) -> str:
        """Rank 0 writes a plain HF dir of the current policy (LoRA merged). Collective."""
        state = self._hf_state_dict()
        if self.rank == 0:
            model = load_causal_lm(self.cfg.policy, self.model_dir, trainable=False)
            model.load_state_dict(state)
            merge_lora(model).save_pretrained(out_dir)
            load_tokenizer(self.model_dir).save_pretrained(out_dir)
        return out_dir

    # ---- LoRA adapter sync: only the adapter goes to the engines (backends/sync/lora.py) ----
    def lora_adapter(self) -> tuple[list[WireTensor], dict]:
        """Collective on all ranks: gather the LoRA parameters only (ZeRO-3), not the model.

        Rank 0 returns the adapter named as peft saves it (what vLLM loads) and peft's LoraConfig as a
        JSON-safe dict; other ranks return ([], {})."""
        from rlhf_dist.models.lora import adapter_for_serving

        if not self.cfg.policy.lora.enabled:
            raise ValueError("lora_adapter: policy.lora.enabled is false, there is no adapter to sync")
        names = [name for name, _, _ in self.engine.parameter_specs() if ".lora_" in name]
        with self.engine.gathered(names) as live:  # ZeRO-3: these parameters only, on every rank
            params = {name: t.to("cpu", copy=True) for name, t in live.items()} if self.rank == 0 else {}
        if self.rank != 0:
            return [], {}
        tensors, config = adapter_for_serving(self.engine.module, params)
        return tensors_to_wire(list(tensors.items())), config


class CriticWorker(TrainWorker):
    def init_model(self, init_dir: str, total_updates: int) -> int:
        self.train_cfg = self.cfg.ppo.critic_train
        dtype = critic_dtype(self.cfg)
        self.init_dir = init_dir
        model = load_critic(self.cfg.critic, init_dir, dtype=dtype)
        self._build_engine(model, total_updates, dtype)
        return sum(p.numel() for p in model.parameters())

    def export_hf(self, out_dir: str) -> str:
        """Rank 0 writes the trained critic (LoRA merged): an HF *ForSequenceClassification dir where
        the backbone allows (models/scalar_head.py). Collective."""
        state = self.engine.full_state_dict()
        if self.rank == 0:
            model = load_critic(self.cfg.critic, self.init_dir, dtype=critic_dtype(self.cfg))
            model.load_state_dict(state)
            merge_lora(model).save_pretrained(out_dir, tokenizer=load_tokenizer(self.init_dir))
        return out_dir

    @torch.no_grad()
    def values(self, inputs: ModelInputs) -> torch.Tensor:
        """V(s_t) for each response token: [B, R]."""
        self.engine.eval()
        inputs, size, out = inputs.to(self.device), inference_chunk_size(self.cfg), []
        for start in range(0, len(inputs), size):
            chunk = inputs.select(slice(start, start + size))
            out.append(response_values(self.engine.model, chunk.sequences, chunk.attention_mask, chunk.response_width))
        return torch.cat(out).float().cpu()

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        values = response_values(self.engine.model, mb.sequences, mb.attention_mask, mb.response_width)
        loss, stats = value_loss(values, mb.values, mb.returns, mb.action_mask, self.cfg.ppo.value_clip)
        out = {f"critic/{k}": float(v) for k, v in stats.items()}
        out["critic/loss"] = float(loss.detach())
        return loss, out
