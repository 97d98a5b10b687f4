"""Trainable roles: the policy and the critic, each a DeepSpeed (or torch) data-parallel group.

Each rank gets an equal shard of the experience batch, runs `ppo_epochs` passes of
micro-batches, and the engine averages gradients across ranks at every accumulation
boundary (one optimizer step per global mini-batch).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, ExitStack, contextmanager
from pathlib import Path

import torch

from rlhf_dist.algo import (masked_mean, ppo_policy_loss, resolve_loss_aggregation, truncated_is_weights,
                             value_loss)
from rlhf_dist.backends.sync.buckets import Bucket, TensorMeta, hf_name, plan_buckets
from rlhf_dist.backends.train.base import TrainEngine
from rlhf_dist.backends.train.factory import build_train_engine
from rlhf_dist.config.topology import critic_dtype, engines_sleep, inference_chunk_size
from rlhf_dist.config.schema_parts import LoRAConfig, TrainConfig
from rlhf_dist.data.experience import Experience, ModelInputs, TrainStats
from rlhf_dist.models import load_causal_lm, load_critic, load_tokenizer
from rlhf_dist.models.forward import chunked_response_logprobs, response_logprobs, response_values
from rlhf_dist.models.lora import merged_state_dict
from rlhf_dist.models.scalar_head import HEAD_WEIGHTS
from rlhf_dist.models.shards import ShardWriter, save_config_files, share_weights
from rlhf_dist.workers.base import RoleWorker
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch
from rlhf_dist.workers.tensor_wire import WireTensor, tensors_to_wire

# The HF name of the output projection that tied-embedding models share with embed_tokens.
TIED_LM_HEAD = "lm_head.weight"


def _micro_batches(batch: Experience, size: int, order: torch.Tensor) -> Iterator[Experience]:
    for start in range(0, len(order), size):
        yield batch.select(order[start : start + size])


def release_cached_memory(device: torch.device, shared: bool) -> None:
    """Hand the caching allocator's free blocks back to the GPU (torch.cuda.empty_cache) when it is `shared`
    with engines that wake into them (config/topology.py engines_sleep). A no-op on CPU, where large tensors go
    back to the OS when freed, and on an unshared GPU, where the cache saves the next step's cudaMalloc calls."""
    if shared and device.type == "cuda":
        torch.cuda.empty_cache()


def num_parameters(model: torch.nn.Module) -> int:
    """Parameters of the whole model; under ZeRO-3 (partitioned at load) a rank's tensors are slices, and
    DeepSpeed keeps each full count in `ds_numel`."""
    return sum(getattr(p, "ds_numel", p.numel()) for p in model.parameters())


def _mean_stats(rows: list[dict[str, float]]) -> dict[str, float]:
    keys = {k for row in rows for k in row}
    return {k: sum(r[k] for r in rows if k in r) / max(1, sum(k in r for r in rows)) for k in keys}


class TrainWorker(RoleWorker):
    """Shared loop of policy and critic: shuffle, micro-batch, backward, step, guard."""

    engine: TrainEngine
    train_cfg: TrainConfig

    def _loading(self, train_cfg: TrainConfig, dtype: str) -> AbstractContextManager:
        """Open it around this rank's model loading: under ZeRO-3 from_pretrained then builds the model
        partitioned over the group (backends/train/zero_init.py), so no rank ever holds it whole; a no-op for
        other stages. A collective under ZeRO-3 (every rank loads together)."""
        from rlhf_dist.backends.train.zero_init import training_load_context

        return training_load_context(train_cfg, self.world_size, dtype, self.device.type)

    def _build_engine(self, model: torch.nn.Module, total_updates: int, dtype: str) -> None:
        self.engine = build_train_engine(model, self.train_cfg, total_updates, dtype, self.world_size, self.device.type)

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        raise NotImplementedError

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.LIST)
    def train_ppo(self, experience: Experience, step: int) -> TrainStats:
        """PPO epochs over this rank's shard of the experience; returns mean stats, skipped updates and this
        rank's own training time (the driver collects groups one after another)."""
        started = time.perf_counter()
        self.engine.train()
        shard = experience.to(self.device)
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
        release_cached_memory(self.device, engines_sleep(self.cfg))  # the engines wake next, on this GPU
        return TrainStats(_mean_stats(rows), self.engine.skipped_updates - skipped_before,
                          time.perf_counter() - started)

    @dispatch(Dispatch.ONE_TO_ALL)
    def save_checkpoint(self, directory: str | Path, tag: str) -> None:
        """Every rank writes its part of the engine's checkpoint (collective)."""
        self.engine.save_checkpoint(Path(directory), tag)

    @dispatch(Dispatch.ONE_TO_ALL)
    def load_checkpoint(self, directory: str | Path, tag: str) -> None:
        self.engine.load_checkpoint(Path(directory), tag)

    # ---- export: a plain HF dir written one bucket of whole layers at a time ----
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.FIRST)
    def export_hf(self, out_dir: str | Path) -> Path:
        """Rank 0 writes the trained model as an HF dir (LoRA merged); returns the dir. Collective: the ranks
        gather one bucket of whole layers at a time (rollout.sync_bucket_mb, as the weight sync), rank 0 copies
        it to host memory and writes it as a safetensors shard, then it is released; config and tokenizer come
        from metadata (_export_config). No rank ever holds the whole model."""
        out = Path(out_dir)
        self.engine.release_gathered()  # a no-grad forward may have left every layer gathered (ZeRO-3)
        writer = ShardWriter(out) if self.rank == 0 else None
        for bucket in self._export_plan():
            with self.engine.gathered(bucket.sources) as live:
                if writer is not None:
                    writer.write(self._export_tensors(live))
        if writer is not None:
            writer.close()
            self._export_config(out)
            share_weights(out)  # a head file written by _export_config too
        return out

    def _export_plan(self, dropped: frozenset[str] = frozenset()) -> list[Bucket]:
        params = [TensorMeta(name, dtype, shape) for name, shape, dtype in self.engine.parameter_specs()]
        return plan_buckets(params, self.cfg.rollout.sync_bucket_mb * 2**20, dropped)

    def _export_tensors(self, live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """One gathered bucket (module parameter names) -> the tensors to save under their saved names."""
        raise NotImplementedError

    def _export_config(self, out: Path) -> None:
        """Rank 0, after the weights: everything else the dir needs (config, tokenizer)."""
        raise NotImplementedError


class PolicyWorker(TrainWorker):
    def training_config(self) -> TrainConfig:
        """What this rank trains with (the SFT stage's worker, workers/supervised.py, trains with sft.train)."""
        return self.cfg.ppo.policy_train

    @dispatch(Dispatch.ONE_TO_ALL)
    def init_model(self, model_dir: str | Path, total_updates: int) -> int:
        """Load the policy and build its engine (a collective under ZeRO-3); returns the parameter count."""
        self.train_cfg = self.training_config()
        self.model_dir = model_dir = str(model_dir)
        with self._loading(self.train_cfg, self.cfg.policy.dtype):
            model = load_causal_lm(self.cfg.policy, model_dir, trainable=True)
        self._build_engine(model, total_updates, self.cfg.policy.dtype)
        return num_parameters(model)

    def _dropped(self) -> frozenset[str]:
        """A tied lm_head is the embedding again: engines and from_pretrained re-tie it, so the weight sync and
        the export leave it out."""
        model = self.engine.module
        lm_head, embedding = model.get_output_embeddings(), model.get_input_embeddings()
        return frozenset({TIED_LM_HEAD}) if lm_head is not None and lm_head.weight is embedding.weight else frozenset()

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
    def logprobs(self, inputs: ModelInputs) -> torch.Tensor:
        """Log-probs of the response tokens under the current policy: [B, R]."""
        self.engine.eval()
        out = chunked_response_logprobs(self.engine.model, inputs.sequences, inputs.attention_mask,
                                        inputs.response_width, inference_chunk_size(self.cfg))[0]
        self.engine.release_gathered()  # ZeRO-3 keeps a no-grad forward's layers gathered until the next backward
        release_cached_memory(self.device, engines_sleep(self.cfg))
        return out

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        ppo = self.cfg.ppo
        # entropy is always measured (a report panel and a collapse signal); it enters the loss only with a coef
        logprobs, entropy = response_logprobs(self.engine.model, mb.sequences, mb.attention_mask, mb.response_width,
                                              with_entropy=True)
        is_weights = None
        if ppo.tis_cap is not None and ppo.old_logprobs == "recompute":
            # Truncated IS: the samples came from the engine's policy, the ratio is against the recomputed one.
            is_weights, _ = truncated_is_weights(mb.old_logprobs, mb.behaviour_logprobs, mb.action_mask, ppo.tis_cap,
                                                 ppo.tis_level)
        aggregation = resolve_loss_aggregation(ppo.loss_aggregation, ppo.advantage, ppo.policy_loss)
        eps_low, eps_high = ppo.clip_bounds()
        loss, stats = ppo_policy_loss(logprobs, mb.old_logprobs, mb.advantages, mb.action_mask, eps_low,
                                      ppo.dual_clip, ppo.policy_loss, aggregation, is_weights, eps_high)
        out = {f"policy/{k}": float(v) for k, v in stats.items()}
        ent = masked_mean(entropy, mb.action_mask)
        if ppo.entropy_coef > 0:
            loss = loss - ppo.entropy_coef * ent
        out["policy/entropy"] = float(ent.detach())
        out["policy/loss"] = float(loss.detach())
        return loss, out

    # ---- weight sync (backends/sync): one bucket of whole layers at a time ----
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.FIRST)
    def weight_sync_plan(self, bucket_mb: int) -> list[Bucket]:
        """The buckets of a sync, from parameter metadata alone (every rank computes the same plan)."""
        params = [TensorMeta(name, dtype, shape) for name, shape, dtype in self.engine.parameter_specs()]
        self._sync_plan = plan_buckets(params, bucket_mb * 2**20, self._dropped())
        return self._sync_plan

    @contextmanager
    def _bucket_tensors(self, index: int) -> Iterator[list[tuple[str, torch.Tensor]]]:
        """Bucket `index` as HF-named tensors (LoRA folded in). A collective under ZeRO-3: all ranks
        gather just this bucket's parameters, and release them when the block ends."""
        bucket = self._sync_plan[index]
        with self.engine.gathered(bucket.sources) as full:
            full = self._export_tensors(full)
            yield [(meta.name, full[meta.name]) for meta in bucket.tensors]

    @dispatch(Dispatch.ONE_TO_ALL)
    def weight_bucket(self, index: int) -> list | None:
        """Object store: rank 0 puts its bucket (numpy arrays, workers/tensor_wire.py) into the store while
        the gathered weights still exist (one copy, straight into shared memory) and returns [ref]; None
        elsewhere. The engines fetch the bucket from the store (RolloutWorker.update_weights)."""
        import ray

        with self._bucket_tensors(index) as tensors:
            return [ray.put(tensors_to_wire(tensors))] if self.rank == 0 else None

    @dispatch(Dispatch.RANK0, gather=Gather.FIRST)
    def weight_broadcast_rendezvous(self) -> tuple[str, int]:
        """NCCL (CUDA): (address, port) of the weight-broadcast group, picked on rank 0's node."""
        return self.rendezvous()

    @dispatch(Dispatch.RANK0)
    def init_weight_broadcast(self, host: str, port: int, world_size: int) -> None:
        """NCCL (CUDA): rank 0 joins the group of the vLLM workers (backends/sync/transports/nccl.py)."""
        from rlhf_dist.backends.sync.transports.nccl import NcclSender

        self._sender = NcclSender(host, port, world_size)

    @dispatch(Dispatch.ONE_TO_ALL)
    def broadcast_weight_bucket(self, index: int) -> None:
        """NCCL: every rank gathers bucket `index` (collective under ZeRO-3); rank 0 broadcasts it."""
        with self._bucket_tensors(index) as tensors:
            if self.rank == 0:
                self._sender.send(tensors)

    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def share_weight_bucket(self, index: int) -> tuple[str, list]:
        """CUDA IPC: gather bucket `index` and share it with the engine on this GPU; it stays alive
        until release_weight_bucket (both collective under ZeRO-3)."""
        from rlhf_dist.backends.sync.transports.cuda_ipc import share_tensors

        self._held = ExitStack()
        tensors = self._held.enter_context(self._bucket_tensors(index))
        self._held_tensors = [(name, t.contiguous()) for name, t in tensors]
        return share_tensors(self._held_tensors)

    @dispatch(Dispatch.ONE_TO_ALL)
    def release_weight_bucket(self) -> None:
        self._held_tensors = []
        self._held.close()

    # ---- export (TrainWorker.export_hf): a plain causal-LM dir that transformers and vLLM load ----
    def _export_plan(self, dropped: frozenset[str] = frozenset()) -> list[Bucket]:
        return super()._export_plan(dropped | self._dropped())

    def _export_tensors(self, live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """HF names, LoRA folded in (a bucket holds each adapter with its base weight)."""
        if self.cfg.policy.lora.enabled:
            return merged_state_dict(live, self.cfg.policy.lora)
        return {hf_name(name): tensor for name, tensor in live.items()}

    def _export_config(self, out: Path) -> None:
        save_config_files(self.engine.module, out)
        load_tokenizer(self.model_dir, self.cfg.policy.trust_remote_code).save_pretrained(out)

    # ---- LoRA adapter sync: only the adapter goes to the engines (backends/sync/transports/lora.py) ----
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.FIRST)
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
    @dispatch(Dispatch.ONE_TO_ALL)
    def init_model(self, init_dir: str | Path, total_updates: int) -> int:
        """Load the critic and build its engine (a collective under ZeRO-3); returns the parameter count."""
        self.train_cfg = self.cfg.ppo.critic_train
        dtype = critic_dtype(self.cfg)
        self.init_dir = init_dir = str(init_dir)
        with self._loading(self.train_cfg, dtype):
            model = load_critic(self.cfg.critic, init_dir, dtype=dtype)
        self._build_engine(model, total_updates, dtype)
        return num_parameters(model)

    # ---- export (TrainWorker.export_hf): ScalarHeadModel.save_pretrained's layout, streamed ----
    def export_hf(self, out_dir: str | Path) -> Path:
        """The trained scalar-head model (LoRA merged) as ScalarHeadModel.save_pretrained writes it: an HF
        *ForSequenceClassification dir where the backbone and pooling allow, else backbone + head. The layout
        and pooling come from the live model (a reward model keeps its own). Subclasses set `self.init_dir`
        (the tokenizer's dir) and override _export_lora when their LoRA is not critic.lora. Collective."""
        self._export_head: dict[str, torch.Tensor] = {}  # the backbone+head layout's head, for its own file
        return super().export_hf(out_dir)

    def _export_lora(self) -> LoRAConfig:
        return self.cfg.critic.lora

    def _export_tensors(self, live: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        backbone_prefix, head_prefix = self.engine.module.saved_weight_prefixes()
        backbone = {name.removeprefix("backbone."): t for name, t in live.items() if name.startswith("backbone.")}
        lora = self._export_lora()
        plain = merged_state_dict(backbone, lora) if lora.enabled else {hf_name(n): t for n, t in backbone.items()}
        out = {backbone_prefix + name: t for name, t in plain.items()}
        head = {name.removeprefix("head."): t for name, t in live.items() if name.startswith("head.")}
        if head_prefix is None:
            self._export_head.update({name: t.to("cpu", copy=True) for name, t in head.items()})
        else:
            out.update({head_prefix + name: t for name, t in head.items()})
        return out

    def _export_config(self, out: Path) -> None:
        from safetensors.torch import save_file

        self.engine.module.save_config_files(out, tokenizer=load_tokenizer(self.init_dir))
        if self._export_head:
            save_file(self._export_head, out / HEAD_WEIGHTS)

    @dispatch(Dispatch.SHARD_BATCH, gather=Gather.CONCAT)
    @torch.no_grad()
    def values(self, inputs: ModelInputs) -> torch.Tensor:
        """V(s_t) for each response token: [B, R]."""
        self.engine.eval()
        inputs, size, out = inputs.to(self.device), inference_chunk_size(self.cfg), []
        for start in range(0, len(inputs), size):
            chunk = inputs.select(slice(start, start + size))
            out.append(response_values(self.engine.model, chunk.sequences, chunk.attention_mask, chunk.response_width))
        values = torch.cat(out).float().cpu()
        self.engine.release_gathered()  # ZeRO-3 keeps a no-grad forward's layers gathered until the next backward
        release_cached_memory(self.device, engines_sleep(self.cfg))
        return values

    def _loss(self, mb: Experience) -> tuple[torch.Tensor, dict[str, float]]:
        values = response_values(self.engine.model, mb.sequences, mb.attention_mask, mb.response_width)
        loss, stats = value_loss(values, mb.values, mb.returns, mb.action_mask, self.cfg.ppo.value_clip)
        out = {f"critic/{k}": float(v) for k, v in stats.items()}
        out["critic/loss"] = float(loss.detach())
        return loss, out
