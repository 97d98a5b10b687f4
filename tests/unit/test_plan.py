"""`rlhf-dist plan`: model sizes, memory formulas against known figures, placement, failures, presets."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rlhf_dist.cli import main
from rlhf_dist.cluster.facts import ModelFacts, estimate_params, facts_from_config_json, model_facts
from rlhf_dist.cluster.memory import (
    CHECKPOINT_FILE, CUDA_CONTEXT, GIB, MIB, NCCL_BUFFERS, PROCESS_HOST, VLLM_CUDA_GRAPHS, Shape, driver_eval_bytes,
    inference_memory, kv_bytes_per_token, largest_unit, layer_activation_bytes, lora_params, rollout_memory,
    sync_plan, trainer_memory,
)
from rlhf_dist.cluster.placement import Hardware, actor_devices, make_groups, parse_hardware, place
from rlhf_dist.cluster.plan import make_plan
from rlhf_dist.config import LoRAConfig, RolloutConfig, TrainConfig, load_config

LLAMA_8B = {"model_type": "llama", "hidden_size": 4096, "intermediate_size": 14336, "num_hidden_layers": 32,
            "num_attention_heads": 32, "num_key_value_heads": 8, "vocab_size": 128256, "tie_word_embeddings": False}
LLAMA_70B = {**LLAMA_8B, "hidden_size": 8192, "intermediate_size": 28672, "num_hidden_layers": 80,
             "num_attention_heads": 64}
LLAMA_1B = {**LLAMA_8B, "hidden_size": 2048, "intermediate_size": 8192, "num_hidden_layers": 16,
            "head_dim": 64, "tie_word_embeddings": True}
PRESETS = sorted(Path("configs").glob("*.yaml"))
SHAPE = Shape(seq=2048, response=1024)


def facts8b() -> ModelFacts:
    return facts_from_config_json(LLAMA_8B, "test")


@pytest.mark.parametrize("config, published", [(LLAMA_8B, 8_030_261_248), (LLAMA_70B, 70_553_706_496),
                                               (LLAMA_1B, 1_235_814_400)])
def test_param_count_matches_published_models(config, published):
    # Meta's safetensors index totals / 2 bytes for Llama-3.1-8B/70B and Llama-3.2-1B (tied embeddings)
    assert facts_from_config_json(config, "x").num_params == published


def test_local_dir_counts_safetensors_exactly(tiny_llama_dir):
    from transformers import AutoModelForCausalLM

    from rlhf_dist.config import ModelConfig
    from rlhf_dist.models.scalar_head import HEAD_META
    from rlhf_dist.cluster.facts import SCALAR_HEAD_META

    model = AutoModelForCausalLM.from_pretrained(tiny_llama_dir)
    facts = model_facts(ModelConfig(path=str(tiny_llama_dir)), "policy.path")
    assert facts.num_params == sum(p.numel() for p in model.parameters())
    assert facts.num_params == estimate_params(64, 128, 2, 2, 1, 32, 259, tied=False)
    assert SCALAR_HEAD_META == HEAD_META


def test_missing_model_names_the_arch_field():
    cfg = load_config(None, ["policy.path=/nowhere/Llama-3.1-8B-Instruct"])
    with pytest.raises(ValueError, match=r"copy its size facts .* into policy\.arch"):
        make_plan(cfg, parse_hardware(None, cfg))


@pytest.mark.parametrize("stage, per_param", [(0, 2 + 2 + 12), (1, 2 + 2 + 12 / 8), (2, 2 + (2 + 12) / 8),
                                              (3, 16 / 8)])
def test_mixed_precision_adam_is_16_bytes_per_param_split_by_zero_stage(stage, per_param):
    p = 1_000_000_000
    mem = trainer_memory("critic", facts8b(), p, TrainConfig(zero_stage=stage), "bfloat16", 8, LoRAConfig(), SHAPE,
                         False, lm_head=False, device="cuda")
    assert mem.params + mem.grads + mem.optimizer == pytest.approx(per_param * p)


def test_fp32_adam_is_16_bytes_per_param_too():
    mem = trainer_memory("critic", facts8b(), 10**9, TrainConfig(zero_stage=0), "float32", 1, LoRAConfig(), SHAPE,
                         False, lm_head=False, device="cpu")
    assert (mem.params, mem.grads, mem.optimizer) == (4e9, 4e9, 8e9)


def test_optimizer_offload_moves_states_and_fp32_grads_to_host():
    p, dp = 8 * 10**9, 8
    mem = trainer_memory("policy", facts8b(), p, TrainConfig(zero_stage=3, offload_optimizer=True), "bfloat16", dp,
                         LoRAConfig(), SHAPE, True, lm_head=True, device="cuda")
    assert mem.optimizer == 0 and mem.params == mem.grads == 2 * p / dp
    assert mem.host == pytest.approx(12 * p / dp + 4 * p / dp + PROCESS_HOST["cuda"])


def _policy_sync(stage: int, device: str, backend: str, mb: int = 256):
    f = facts8b()
    rollout = RolloutConfig(sync_backend=backend, sync_bucket_mb=mb, sync_buckets_in_flight=2)
    sync = sync_plan(f, rollout, "bfloat16")
    mem = trainer_memory("policy", f, f.num_params, TrainConfig(zero_stage=stage), "bfloat16", 8, LoRAConfig(), SHAPE,
                         True, lm_head=True, device=device, sync=sync)
    return mem, sync.bucket


def test_bounded_sync_holds_buckets_not_the_model():
    # a bucket holds whole layers: never smaller than the biggest one (8B: the 128256 x 4096 embedding)
    assert largest_unit(facts8b(), 2) == 2 * 128256 * 4096
    assert sync_plan(facts8b(), RolloutConfig(sync_bucket_mb=4096), "bfloat16").bucket == 4096 * MIB
    mem, bucket = _policy_sync(3, "cuda", "nccl")
    assert bucket == 2 * 128256 * 4096
    # ZeRO-3: every rank receives the gathered bucket; rank 0 one more (the next one gathers while it sends)
    assert mem.transient(rank=1)["sync"] == bucket and mem.transient(rank=0)["sync"] == 2 * bucket
    assert 2 * bucket < 0.2 * 2 * facts8b().num_params  # not the whole model any more
    assert mem.host_phases(0).get("sync", 0.0) == 0.0  # NCCL on CUDA: no host copy
    mem, bucket = _policy_sync(3, "cuda", "object_store")
    assert mem.host_phases(0)["sync"] == 2 * bucket and mem.host_phases(1).get("sync", 0.0) == 0.0  # in flight
    mem, bucket = _policy_sync(2, "cuda", "cuda_ipc")  # whole weights on every rank: rank 0's send buffer only
    assert mem.transient(rank=1).get("sync", 0.0) == 0.0 and mem.transient(rank=0)["sync"] == bucket
    mem, _ = _policy_sync(2, "cpu", "object_store")  # CPU below ZeRO-3: the buckets are the weights themselves
    assert mem.transient(rank=0).get("sync", 0.0) == 0.0


def test_sharded_reference_holds_its_share_plus_one_gathered_unit():
    f = facts8b()
    full = inference_memory("reference", f, f.num_params, "bfloat16", 2, SHAPE, lm_head=True, device="cuda")
    shard = inference_memory("reference", f, f.num_params, "bfloat16", 2, SHAPE, lm_head=True, device="cuda",
                             shards=4)
    assert full.params == 2 * f.num_params and shard.params == 2 * f.num_params / 4
    assert shard.activations["inference"] == full.activations["inference"] + largest_unit(f, 2)
    # partitioned while loading: its share plus about one checkpoint file at a time
    assert shard.host_transient["load"] == shard.params + CHECKPOINT_FILE < full.host_transient["load"]


def test_plan_reads_reference_zero_stage_and_critic_checkpointing():
    hw = Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79, cpus_per_node=128, ram_gib=1900)
    cfg = load_config("configs/llama70b-multinode.yaml")
    assert cfg.ppo.reference_zero_stage == 3 and cfg.critic.gradient_checkpointing
    plan = make_plan(cfg, hw)
    replica = make_plan(load_config("configs/llama70b-multinode.yaml", ["ppo.reference_zero_stage=0",
                                                                        "critic.gradient_checkpointing=false"]), hw)
    assert replica.memory["reference"].params == pytest.approx(4 * plan.memory["reference"].params)
    assert replica.memory["critic"].activations["train"] > 3 * plan.memory["critic"].activations["train"]
    assert any("roles there: reference" in p for p in replica.problems)  # a full 70B replica: 131 GiB


def test_gpu_load_is_the_sum_of_the_actors_peaks():
    # colocated: each process keeps its own peak (its allocator's cache), so peaks add up, not resident + worst phase
    cfg = load_config("configs/llama8b-1node-8gpu.yaml")
    plan = make_plan(cfg, parse_hardware("nodes=1,gpus_per_node=8,gpu_mem_gib=79", cfg))
    gpu1 = next(d for d in plan.devices if d.name == "node0 gpu1")  # rank 1 of each role: not the sender
    expected = sum(plan.memory[role].rank_peak(rank) for role, rank in gpu1.members)
    assert gpu1.peak == pytest.approx(expected)
    assert gpu1.peak > gpu1.resident + max(max(plan.memory[r].transient(1).values()) for r, _ in gpu1.members)


def test_policy_training_adds_the_entropy_fp32_temporaries():
    import torch

    from rlhf_dist.algo import entropy_from_logits

    f, train = facts8b(), TrainConfig(zero_stage=3, micro_batch_size=2)
    mem = {e: trainer_memory("policy", f, f.num_params, train, "bfloat16", 8, LoRAConfig(), SHAPE, True,
                             lm_head=True, device="cuda", entropy=e) for e in (False, True)}
    # 4 fp32 [2, 1024, 128256] tensors at once: 2 x 1024 x 128256 x 4 bytes x 4 = 3.9 GiB
    assert mem[True].activations["train"] - mem[False].activations["train"] == 4_202_692_608
    # the 4: entropy_from_logits saves 3 of them for backward (log_softmax, its clamp, exp); the product is the 4th
    saved: dict[int, int] = {}

    def keep(t):
        saved[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    logits = torch.randn(2, 5, 7, dtype=torch.bfloat16, requires_grad=True)
    with torch.autograd.graph.saved_tensors_hooks(keep, lambda t: t):
        entropy_from_logits(logits)
    assert sorted(saved.values()) == [2 * 5 * 7 * 4] * 3


def test_cuda_context_and_nccl_buffers_per_communicator():
    f, train = facts8b(), TrainConfig(zero_stage=3)
    gpu = trainer_memory("critic", f, 10**9, train, "bfloat16", 8, LoRAConfig(), SHAPE, False, lm_head=False,
                         device="cuda", nccl_groups=2)
    cpu = trainer_memory("critic", f, 10**9, train, "bfloat16", 8, LoRAConfig(), SHAPE, False, lm_head=False,
                         device="cpu", nccl_groups=0)
    assert (gpu.context, gpu.nccl) == (1.0 * GIB, 1.0 * GIB) and (cpu.context, cpu.nccl) == (0, 0)
    assert gpu.resident - cpu.resident == 2.0 * GIB  # context 0.5 + allocator slack 0.5 + 2 x 0.5 NCCL
    # 70B preset: policy in its ZeRO group of 8 and the NCCL weight broadcast; critic (2) and sharded reference (4)
    # in their own group; one reward replica in none; an engine's workers in the broadcast
    plan = make_plan(load_config("configs/llama70b-multinode.yaml"), Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79))
    assert {role: m.nccl / NCCL_BUFFERS for role, m in plan.memory.items()} == \
        {"policy": 2, "critic": 1, "reference": 1, "reward": 0, "rollout": 1}
    # vLLM: the broadcast joins after it sized its KV cache (on top of its fraction); its TP group is inside it
    tp = {n: rollout_memory(f, f.num_params, RolloutConfig(tensor_parallel_size=n, sync_backend="nccl"), "bfloat16",
                            "cuda", 80 * GIB, SHAPE) for n in (1, 2)}
    assert tp[1].resident == tp[2].resident == pytest.approx(0.5 * 80 * GIB + NCCL_BUFFERS)
    assert tp[2].context == tp[1].context - 8192 * 14336 * 2 + NCCL_BUFFERS  # half the MLP activations, + TP group


def test_sleeping_engines_pin_a_host_copy_by_level():
    f = facts8b()
    weights = 2 * f.num_params  # 16.06 GB: bf16, the whole engine's host copy (every TP shard)

    def host(sleep, eager=True):
        cfg = RolloutConfig(enforce_eager=eager, sync_backend="cuda_ipc")  # no host copy in the sync
        mem = rollout_memory(f, f.num_params, cfg, "bfloat16", "cuda", 80 * GIB, SHAPE, sleep=sleep)
        return mem.host - PROCESS_HOST["cuda"], mem.host_transient

    assert host(None) == (0, {})  # awake engines
    assert host((1, 2)) == (0, {"load": weights})  # level 1 while the others load, freed at the first wake_up
    assert host((1, 1)) == (weights, {})  # adapter sync: level 1 every step, the pinned copy stays cached
    assert host((1, 2), eager=False) == (0, {"load": weights + VLLM_CUDA_GRAPHS, "train": VLLM_CUDA_GRAPHS})
    hw = Hardware(nodes=1, gpus_per_node=8, gpu_mem_gib=79)
    plan = make_plan(load_config("configs/llama8b-1node-8gpu.yaml"), hw)
    assert plan.memory["rollout"].host_transient["load"] == weights + VLLM_CUDA_GRAPHS
    lora = make_plan(load_config("configs/llama8b-1node-8gpu.yaml", ["policy.lora.enabled=true",
                                                                     "rollout.lora_sync=adapter"]), hw)
    assert lora.memory["rollout"].host == PROCESS_HOST["cuda"] + weights + VLLM_CUDA_GRAPHS


def test_driver_eval_holds_two_policies_on_one_gpu():
    f = facts8b()
    weights = 2 * 2 * 8_030_261_248  # trained + starting policy, bf16
    generate = 32 * 2048 * 131_072 + 32 * 1024 * 167_936  # KV of 32 rows x 2048 tokens; prefill of 32 x 1024
    score = (8192 * 167_936 + 4 * 2048 * 128_256 * 2 + 4 * 1024 * 128_256 * 4  # layer, logits, log-softmax
             + 4 * 4 * 1024 * 128_256 * 4)  # entropy
    assert generate > score
    assert driver_eval_bytes(f, f.num_params, "bfloat16", 4, SHAPE) == weights + generate + 1.0 * GIB
    reward = (facts_from_config_json(LLAMA_70B, "x"), 70 * 10**9, "bfloat16")  # a bigger model: its phase wins
    assert driver_eval_bytes(f, f.num_params, "bfloat16", 4, SHAPE, reward) == \
        140 * 10**9 + layer_activation_bytes(reward[0], 4 * 2048, 2) + 1.0 * GIB
    hw = Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79)
    in_driver = make_plan(load_config("configs/llama70b-multinode.yaml", ["eval.placement=driver"]), hw).notes
    assert any(n.startswith("driver: eval.placement driver") and "too big for one GPU" in n for n in in_driver)
    # the default on CUDA ('auto'): evaluation on the cluster, the driver holds no model
    notes = make_plan(load_config("configs/llama70b-multinode.yaml"), hw).notes
    assert any(n.startswith("driver: holds no model") for n in notes)
    cfg = load_config("configs/tiny.yaml")  # CPU: the evaluation shares the node's RAM after PPO, no note
    assert not any(n.startswith("driver:") for n in make_plan(cfg, parse_hardware(None, cfg)).notes)


def test_lora_trains_r_times_in_plus_out_per_linear():
    f = facts8b()
    per_layer = 8 * ((4096 + 4096) * 2 + (4096 + 1024) * 2 + (4096 + 14336) * 3)  # q,o / k,v / gate,up,down
    assert lora_params(f, LoRAConfig(enabled=True, r=8)) == 32 * per_layer
    assert lora_params(f, LoRAConfig(enabled=True, r=8, target_modules=["q_proj", "v_proj"])) == 32 * 8 * (8192 + 5120)


def test_activation_and_kv_formulas_by_hand():
    f = facts8b()
    # per token at 16 bits: norms 4h + attention 6h + 4*kv_dim + gated MLP 2h + 8i
    assert layer_activation_bytes(f, 1, 2) == 12 * 4096 + 4 * 1024 + 8 * 14336
    assert layer_activation_bytes(f, 10, 4) == 2 * 10 * (12 * 4096 + 4 * 1024 + 8 * 14336)
    # Llama-3 8B KV cache in bf16: 2 x 32 layers x 8 kv heads x 128 x 2 bytes = 128 KiB per token
    assert kv_bytes_per_token(f, "bfloat16", 1) == 128 * 1024
    assert kv_bytes_per_token(f, "bfloat16", 2) == 64 * 1024
    assert kv_bytes_per_token(f, "bfloat16", 16) == 16 * 1024  # fewer kv heads than TP ranks: replicated


def test_vllm_takes_its_memory_fraction_and_the_rest_is_kv_cache():
    f = facts8b()
    rollout = RolloutConfig(gpu_memory_utilization=0.5)
    mem = rollout_memory(f, f.num_params, rollout, "bfloat16", "cuda", 80 * GIB, SHAPE)
    assert mem.resident == pytest.approx(40 * GIB)
    assert mem.vllm_weights == 2 * f.num_params
    assert mem.kv_tokens == int(mem.kv_cache // (128 * 1024)) and mem.kv_tokens > 100_000


def _cuda_cfg(*overrides: str):
    base = ["cluster.device=cuda", *(f"cluster.{r}.gpus_per_actor=1" for r in ("policy", "critic", "reference",
                                                                                 "reward", "rollout"))]
    return load_config("configs/tiny.yaml", base + list(overrides))


def test_disaggregated_groups_reserve_only_used_roles_and_pack_nodes():
    cfg = _cuda_cfg()
    groups = make_groups(cfg)
    assert list(groups) == ["policy", "critic", "reference", "rollout"]  # no reward model source: no reward group
    problems = place(groups, Hardware(nodes=2, gpus_per_node=4), "cuda")
    assert problems == []
    assert [b.node for bs in groups.values() for b in bs] == [0, 0, 0, 0, 1]  # first fit, PACK


def test_group_advantages_reserve_no_critic():
    cfg = _cuda_cfg("ppo.advantage=grpo", "rollout.sampling.samples_per_prompt=2")
    assert "critic" not in make_groups(cfg)
    plan = make_plan(cfg, Hardware(nodes=1, gpus_per_node=8))
    assert "critic" not in plan.memory and "critic" not in plan.groups


def test_colocated_bundle_sums_roles_and_they_share_one_gpu():
    # policy 0.3: at 0.2 bundle 1 would fit beside bundle 0 and put both NCCL policy ranks on one GPU (a rule)
    cfg = _cuda_cfg("cluster.colocate=true", *(f"cluster.{r}.gpus_per_actor=0.2" for r in
                                               ("critic", "reference", "reward", "rollout")),
                    "cluster.policy.gpus_per_actor=0.3")
    groups = make_groups(cfg)
    bundles = groups["colocated"]
    # rank 0 holds policy, critic, reference and rollout (no reward model source: nothing reserved for it);
    # rank 1 exists only for the policy (2 actors)
    assert [b.gpu for b in bundles] == pytest.approx([0.9, 0.3])
    assert place(groups, Hardware(nodes=1, gpus_per_node=2), "cuda") == []
    assert set(map(tuple, actor_devices(bundles[0]).values())) == {(bundles[0].devices[0],)}


def test_too_few_gpus_and_oversized_bundles_fail_clearly():
    cfg = _cuda_cfg("rollout.tensor_parallel_size=8", "cluster.rollout.gpus_per_actor=8")
    plan = make_plan(cfg, Hardware(nodes=1, gpus_per_node=4, gpu_mem_gib=80))
    text = "\n".join(plan.problems)
    assert not plan.fits
    assert "rollout bundle 0 needs 8 GPUs in one node; nodes have 4" in text
    assert "ask for 12 GPUs; the cluster has 1 x 4 = 4" in text  # 2 policy + critic + reference + 8 rollout


def test_memory_over_capacity_names_the_device_and_phase():
    cfg = load_config("configs/llama70b-multinode.yaml", ["cluster.policy.num_actors=2"])
    plan = make_plan(cfg, Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79, cpus_per_node=128, ram_gib=1900))
    text = "\n".join(plan.problems)
    assert "node0 gpu0-1 (2 alike): peak" in text and "(during the actors' own peaks) > capacity 79.0 GiB each; " \
        "roles there: policy" in text
    # host RAM sums per phase: 2 ranks each load the whole 131 GiB model before offloading
    cfg = load_config("configs/llama70b-multinode.yaml", ["cluster.reference.num_actors=1",
                                                          "ppo.reference_zero_stage=0"])
    plan = make_plan(cfg, Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79, cpus_per_node=128, ram_gib=1900))
    assert any("roles there: reference" in p for p in plan.problems)


def test_kv_cache_and_tensor_parallel_checks():
    cfg = load_config("configs/llama8b-1node-8gpu.yaml", ["rollout.gpu_memory_utilization=0.2"])
    plan = make_plan(cfg, Hardware(nodes=1, gpus_per_node=8, gpu_mem_gib=79))
    assert any("exceed rollout.gpu_memory_utilization 0.2" in p for p in plan.problems)
    cfg = load_config("configs/llama70b-multinode.yaml", ["rollout.tensor_parallel_size=3",
                                                          "cluster.rollout.gpus_per_actor=3"])
    plan = make_plan(cfg, Hardware(nodes=4, gpus_per_node=8, gpu_mem_gib=79))
    assert any("tensor_parallel_size 3 must divide the policy's 64 attention heads" in p for p in plan.problems)


def test_hardware_spec_parsing():
    cfg = _cuda_cfg()
    hw = parse_hardware("nodes=2,gpus_per_node=4,gpu_mem_gib=40.5", cfg)
    assert (hw.nodes, hw.gpus_per_node, hw.gpu_mem_gib, hw.cpus_per_node) == (2, 4, 40.5, None)
    with pytest.raises(ValueError, match="KEY in nodes"):
        parse_hardware("gpus=8", cfg)
    with pytest.raises(ValueError, match="must be a number"):
        parse_hardware("nodes=two", cfg)


def _stated_hardware(preset: Path) -> str:
    match = re.search(r"^# hardware: (\S+)", preset.read_text(), re.M)
    assert match, f"{preset} states no '# hardware:' line"
    return match.group(1)


@pytest.mark.parametrize("preset", PRESETS, ids=[p.stem for p in PRESETS])
def test_every_preset_validates_and_plans_for_its_stated_hardware(preset, capsys):
    spec = _stated_hardware(preset)
    assert main(["plan", str(preset), "--cluster", spec]) == 0
    out = capsys.readouterr().out
    assert "OK: the plan fits" in out and "DOES NOT FIT" not in out
    cfg = load_config(preset)
    plan = make_plan(cfg, parse_hardware(spec, cfg))
    for mem in plan.memory.values():  # every role's estimate is real, not empty
        assert mem.peak > (CUDA_CONTEXT if cfg.cluster.device == "cuda" else 0)


def test_plan_cli_json_and_overrides_after_config(capsys):
    # --config plus an override whose value argparse would take for the positional CONFIG
    code = main(["plan", "--config", "configs/tiny.yaml", "--rollout.num_engines", "2",
                 "--cluster.rollout.cpus_per_actor", "0.5", "--json",
                 "--cluster", "nodes=1,cpus_per_node=2,ram_gib=16"])
    assert code == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["fits"] and len(plan["placement"]["rollout"]) == 2
    assert plan["memory"]["policy"]["grads"] > 0


def test_plan_cli_exit_codes(capsys):
    assert main(["plan", "configs/llama8b-1node-8gpu.yaml", "--cluster", "nodes=1,gpus_per_node=4"]) == 1
    assert "DOES NOT FIT" in capsys.readouterr().out
    assert main(["plan", "configs/tiny.yaml", "--ppo.kl.coeff", "1"]) == 2  # typo: config error, no plan
    assert "did you mean 'coef'" in capsys.readouterr().err


def test_one_rank_zero_partitions_nothing_note():
    tiny = "nodes=1,cpus_per_node=2,ram_gib=8"
    # tiny.yaml: policy on 2 ranks at ZeRO-2 (partitioned), critic on 1 rank at ZeRO-2 (nothing to partition)
    cfg = load_config("configs/tiny.yaml")
    notes = make_plan(cfg, parse_hardware(tiny, cfg)).notes
    assert any(n.startswith("ppo.critic_train.zero_stage 2 on a one-rank group") for n in notes)
    assert not any(n.startswith("ppo.policy_train.zero_stage") for n in notes)
    cfg = load_config("configs/tiny.yaml", ["ppo.critic_train.zero_stage=0"])
    assert not any("one-rank group" in n for n in make_plan(cfg, parse_hardware(tiny, cfg)).notes)
    cfg = load_config("configs/tiny.yaml", ["ppo.critic_train.zero_stage=2", "ppo.critic_train.offload_optimizer=true"])
    assert not any("one-rank group" in n for n in make_plan(cfg, parse_hardware(tiny, cfg)).notes)


@pytest.mark.parametrize("preset, spec", [
    ("configs/llama70b-multinode.yaml", "nodes=4,gpus_per_node=8,gpu_mem_gib=79,cpus_per_node=128,ram_gib=1900"),
    ("configs/llama8b-1node-8gpu.yaml", "nodes=1,gpus_per_node=8,gpu_mem_gib=79,cpus_per_node=64,ram_gib=900"),
])
def test_big_presets_fit_on_80gb_gpus(preset, spec, capsys):
    # issue #14: 70B on at most 4 nodes x 8 x 80 GB, 8B on one 8-GPU node
    assert main(["plan", preset, "--cluster", spec]) == 0
    assert "OK: the plan fits" in capsys.readouterr().out
    cfg = load_config(preset)
    plan = make_plan(cfg, parse_hardware(spec, cfg))
    assert all(d.peak <= d.capacity for d in plan.devices + plan.hosts)
    assert {d.name.split()[0] for d in plan.devices} <= {f"node{i}" for i in range(4)}
