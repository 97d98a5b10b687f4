"""DeepSpeedEngine for real: 2 ranks over gloo on CPU (ZeRO-0/1/2/3), tiny models, few steps.

All scenarios run inside ONE pair of spawned ranks (start-up costs more than training here);
each rank writes its results to a file, and the tests below check them, some against a
single-process TorchEngine reference fed the same global batches.

Data layout: a global batch is 8 sequences = 4 micro-batches of 2. With 2 ranks each rank
does 2 micro-steps per update; rank r at micro-step k takes micro-batch 2k + r. The
reference (TorchEngine, accumulation 4) takes micro-batches 0..3 in order, so both average
the same 4 micro-batch losses.
"""

from __future__ import annotations

import math
import os
import time
import traceback
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow

WORLD = 2
MICRO = 2
GLOBAL = 8
ACCUM_PER_RANK = GLOBAL // (MICRO * WORLD)
TOTAL_UPDATES = 6
SEQ_LEN = 12
LM_LR = 1e-3
VALUE_LR = 5e-4


# ---------------------------------------------------------------------------- shared pieces
def _train_cfg(stage: int, lr: float = 1e-3):
    from rlhf_dist.config.schema_parts import TrainConfig

    return TrainConfig(
        backend="deepspeed",
        zero_stage=stage,
        micro_batch_size=MICRO,
        global_batch_size=GLOBAL,
        lr=lr,
        weight_decay=0.01,
        lr_schedule="linear",
        warmup_steps=0,
        grad_clip=1.0,
    )


def _lm_model(seed: int = 0):
    from transformers import AutoModelForCausalLM

    from rlhf_dist.models.tiny import tiny_config

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config())


def _value_model(seed: int = 0):
    from transformers import AutoModel

    from rlhf_dist.models.scalar_head import ScalarHeadModel
    from rlhf_dist.models.tiny import tiny_config

    torch.manual_seed(seed)
    return ScalarHeadModel(AutoModel.from_config(tiny_config()))


def _data():
    g = torch.Generator().manual_seed(1234)
    ids = torch.randint(3, 259, (GLOBAL, SEQ_LEN), generator=g)
    mask = torch.ones_like(ids)
    mask[1::2, -3:] = 0  # some right padding
    targets = torch.randn(GLOBAL, SEQ_LEN, generator=g)
    return ids, mask, targets


def _micro(j: int):
    ids, mask, targets = _data()
    rows = slice(j * MICRO, (j + 1) * MICRO)
    return ids[rows], mask[rows], targets[rows]


def _lm_loss(engine, j: int):
    ids, mask, _ = _micro(j)
    labels = ids.masked_fill(mask == 0, -100)
    return engine.model(input_ids=ids, attention_mask=mask, labels=labels).loss


def _value_loss_direct(engine, j: int):
    """The critic's per-token values through a method other than forward, called directly
    (DeepSpeed's attribute fall-through; fine under ZeRO-0/1/2 and on TorchEngine)."""
    ids, mask, targets = _micro(j)
    return _masked_mse(engine.model.token_scores(ids, mask), targets, mask)


def _value_loss_routed(engine, j: int):
    """The same through DeepSpeedEngine.call_method (required under ZeRO-3)."""
    ids, mask, targets = _micro(j)
    return _masked_mse(engine.call_method("token_scores", ids, mask), targets, mask)


def _value_loss_forward(engine, j: int):
    """The same through forward(per_token=True): what the PPO critic does."""
    ids, mask, targets = _micro(j)
    return _masked_mse(engine.model(ids, mask, per_token=True), targets, mask)


def _masked_mse(scores, targets, mask):
    return (((scores - targets) ** 2) * mask).sum() / mask.sum()


def _update(engine, loss_fn, rank: int, poison_first: bool = False):
    """One optimizer update on this rank: ACCUM_PER_RANK micro-steps. -> (mean loss, infos)."""
    losses, infos = [], []
    for k in range(ACCUM_PER_RANK):
        loss = loss_fn(engine, k * WORLD + rank)
        losses.append(float(loss.detach()))
        if poison_first and k == 0:
            loss = loss + float("nan")
        engine.backward(loss)
        infos.append(engine.step())
    return sum(losses) / len(losses), [vars(i) for i in infos]


# ---------------------------------------------------------------------------- rank scenarios
SCENARIOS = {  # name: (zero stage, model factory, loss, lr)
    "zero0_lm": (0, _lm_model, _lm_loss, LM_LR),
    "zero1_lm": (1, _lm_model, _lm_loss, LM_LR),
    "zero2_lm": (2, _lm_model, _lm_loss, LM_LR),
    "zero3_lm": (3, _lm_model, _lm_loss, LM_LR),
    "zero2_value": (2, _value_model, _value_loss_direct, VALUE_LR),
    "zero3_value": (3, _value_model, _value_loss_routed, VALUE_LR),
    "zero3_value_forward": (3, _value_model, _value_loss_forward, VALUE_LR),
}


def _scenario_train(rank: int, name: str, ckpt_dir: Path) -> dict:
    """3 updates (state after 2 kept + checkpointed), then resume from the checkpoint."""
    from rlhf_dist.backends.train.deepspeed_engine import DeepSpeedEngine

    stage, make, loss_fn, lr = SCENARIOS[name]
    engine = DeepSpeedEngine(make(0), _train_cfg(stage, lr), TOTAL_UPDATES)
    engine.train()
    out: dict = {"losses": [], "infos": []}
    for u in range(3):
        loss, infos = _update(engine, loss_fn, rank)
        out["losses"].append(loss)
        out["infos"].append(infos)
        if u == 1:
            out["state_u2"] = engine.full_state_dict()
            engine.save_checkpoint(ckpt_dir, "u2")
    out["state_u3"] = engine.full_state_dict()
    out["module_type"] = type(engine.module).__name__
    out["module_names"] = [n for n, _ in engine.module.named_parameters()]
    del engine

    fresh = DeepSpeedEngine(make(1), _train_cfg(stage, lr), TOTAL_UPDATES)  # other init weights
    fresh.train()
    fresh.load_checkpoint(ckpt_dir, "u2")
    out["resumed_state_u2"] = fresh.full_state_dict()
    loss, infos = _update(fresh, loss_fn, rank)
    out["resumed_loss_u3"] = loss
    out["resumed_infos_u3"] = infos
    out["resumed_state_u3"] = fresh.full_state_dict()
    return out


def _scenario_nonfinite(rank: int, stage: int, dtype: str = "float32") -> dict:
    """Update 1 normal; update 2 has a NaN loss on rank 1 at its first micro-step; update 3 normal."""
    from rlhf_dist.backends.train.deepspeed_engine import DeepSpeedEngine

    engine = DeepSpeedEngine(_lm_model(0), _train_cfg(stage), TOTAL_UPDATES, dtype=dtype)
    engine.train()
    out: dict = {}
    _, out["infos_u1"] = _update(engine, _lm_loss, rank)
    out["state_before"] = engine.full_state_dict()
    _, out["infos_u2"] = _update(engine, _lm_loss, rank, poison_first=(rank == 1))
    out["state_after_skip"] = engine.full_state_dict()
    _, out["infos_u3"] = _update(engine, _lm_loss, rank)
    out["state_u3"] = engine.full_state_dict()
    out["skipped_updates"] = engine.skipped_updates
    out["nonfinite_losses"] = engine.nonfinite_losses
    return out


def _scenario_zero3_direct_call(rank: int) -> dict:
    """Under ZeRO-3 a loss from a directly called method must be refused, not trained wrongly."""
    from rlhf_dist.backends.train.deepspeed_engine import DeepSpeedEngine

    engine = DeepSpeedEngine(_value_model(0), _train_cfg(3, VALUE_LR), TOTAL_UPDATES)
    loss = _value_loss_direct(engine, rank)
    try:
        engine.backward(loss)
    except RuntimeError as err:
        return {"error": str(err)}
    return {"error": None}


def _rank_main(rank: int, port: int, out_dir: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(WORLD),
        LOCAL_RANK=str(rank),
        OMP_NUM_THREADS="1",
    )
    torch.set_num_threads(1)
    out = Path(out_dir)
    results: dict = {"timings": {}}
    try:
        from rlhf_dist.backends.train.dist import init_distributed

        init_distributed("gloo", timeout_s=90)
        scenarios = {name: (lambda n=name: _scenario_train(rank, n, out / f"ckpt_{n}")) for name in SCENARIOS}
        scenarios.update(
            nan_zero0=lambda: _scenario_nonfinite(rank, 0),
            nan_zero2=lambda: _scenario_nonfinite(rank, 2),
            nan_zero3=lambda: _scenario_nonfinite(rank, 3),
            nan_zero2_bf16=lambda: _scenario_nonfinite(rank, 2, dtype="bfloat16"),
            zero3_direct_call=lambda: _scenario_zero3_direct_call(rank),
        )
        for name, run in scenarios.items():
            t0 = time.perf_counter()
            results[name] = run()
            results["timings"][name] = time.perf_counter() - t0
        torch.save(results, out / f"rank{rank}.pt")
        import torch.distributed as tdist

        tdist.barrier()
        tdist.destroy_process_group()
    except BaseException:
        (out / f"rank{rank}.error").write_text(traceback.format_exc())
        os._exit(1)


def _single_main(out_dir: str) -> None:
    """One process, no launcher env: single_process_deepspeed_engine (bf16, ZeRO-2, optimizer offload)."""
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        from rlhf_dist.backends.train.deepspeed_engine import single_process_deepspeed_engine
        from rlhf_dist.backends.train.dist import init_distributed

        cfg = _train_cfg(2, LM_LR).model_copy(update={"offload_optimizer": True, "global_batch_size": 4})
        engine = single_process_deepspeed_engine(_lm_model(0), cfg, TOTAL_UPDATES, dtype="bfloat16")
        init_distributed("gloo")  # idempotent: already initialised
        results: dict = {"world": int(os.environ["WORLD_SIZE"]), "accum": engine.accum, "losses": []}
        for _ in range(3):
            losses = []
            for j in range(2):
                loss = _lm_loss(engine, j)
                losses.append(float(loss.detach()))
                engine.backward(loss)
                info = engine.step()
            results["losses"].append(sum(losses) / 2)
            assert info.applied and info.boundary
        results["state"] = engine.full_state_dict()
        torch.save(results, out / "rank0.pt")
    except BaseException:
        (out / "rank0.error").write_text(traceback.format_exc())
        os._exit(1)


def _zero0_single_main(out_dir: str) -> None:
    """One rank at ZeRO-0 fp32: no gradient all-reduce, fused AdamW; 2 updates of 4 micro-batches."""
    torch.set_num_threads(1)
    out = Path(out_dir)
    try:
        from rlhf_dist.backends.train.deepspeed_engine import single_process_deepspeed_engine

        engine = single_process_deepspeed_engine(_lm_model(0), _train_cfg(0, LM_LR), TOTAL_UPDATES)
        results: dict = {"allreduce": engine.ds_engine.enable_backward_allreduce,
                         "fused": [g["fused"] for g in engine.optimizer.param_groups], "grad_norms": []}
        for _ in range(2):
            for j in range(GLOBAL // MICRO):
                engine.backward(_lm_loss(engine, j))
                info = engine.step()
            results["grad_norms"].append(info.grad_norm)
        results["state"] = engine.full_state_dict()
        # weight sync's copy=False hands out the weights themselves; the default is a snapshot
        params, live = dict(engine.module.named_parameters()), engine.full_state_dict(copy=False)
        results["live_is_weights"] = all(live[n].data_ptr() == p.data_ptr() for n, p in params.items())
        results["copy_is_weights"] = any(results["state"][n].data_ptr() == p.data_ptr() for n, p in params.items())
        torch.save(results, out / "rank0.pt")
    except BaseException:
        (out / "rank0.error").write_text(traceback.format_exc())
        os._exit(1)


def _spawn_ranks(out_dir: Path, timeout_s: float = 240.0, world: int = WORLD, target=None) -> list[dict]:
    import multiprocessing as mp

    from rlhf_dist.utils import free_port

    ctx = mp.get_context("spawn")
    port = free_port()
    if target is None:
        procs = [ctx.Process(target=_rank_main, args=(r, port, str(out_dir)), daemon=True) for r in range(world)]
    else:
        procs = [ctx.Process(target=target, args=(str(out_dir),), daemon=True)]
    old_omp = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"  # inherited by the children before they import torch
    try:
        for p in procs:
            p.start()
    finally:
        if old_omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = old_omp
    deadline = time.monotonic() + timeout_s
    failed = False
    while any(p.is_alive() for p in procs) and time.monotonic() < deadline:
        if any(p.exitcode not in (None, 0) for p in procs):
            failed = True
            break
        time.sleep(0.2)
    for p in procs:
        if p.is_alive():
            p.kill()
        p.join(5)
    error_files = [out_dir / f"rank{r}.error" for r in range(world)]
    errors = {r: f.read_text() for r, f in enumerate(error_files) if f.exists()}
    if errors or failed or any(p.exitcode != 0 for p in procs):
        detail = "\n".join(f"--- rank {r} ---\n{tb}" for r, tb in errors.items())
        codes = [p.exitcode for p in procs]
        raise RuntimeError(f"DeepSpeed ranks failed or timed out (exit codes {codes}):\n{detail}")
    return [torch.load(out_dir / f"rank{r}.pt", weights_only=False) for r in range(world)]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    t0 = time.perf_counter()
    results = _spawn_ranks(tmp_path_factory.mktemp("ds-ranks"))
    print(f"\nDeepSpeed ranks: {time.perf_counter() - t0:.1f}s total; per scenario (rank 0): "
          + ", ".join(f"{k} {v:.1f}s" for k, v in results[0]["timings"].items()))
    return results


# ---------------------------------------------------------------------------- helpers
def _max_diff(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max(float((a[k].float() - b[k].float()).abs().max()) for k in a)


def _assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def _reference_state(make, lr: float, updates: int, value: bool) -> tuple[dict, list[float]]:
    """Single-process TorchEngine on the same global batches."""
    from rlhf_dist.backends.train.torch_engine import TorchEngine

    engine = TorchEngine(make(0), _train_cfg(2, lr).model_copy(update={"backend": "torch"}), TOTAL_UPDATES)
    engine.train()
    grad_norms = []
    for _ in range(updates):
        for j in range(GLOBAL // MICRO):
            engine.backward((_value_loss_direct if value else _lm_loss)(engine, j))
            info = engine.step()
        assert info.applied
        grad_norms.append(info.grad_norm)
    return engine.full_state_dict(), grad_norms


# ---------------------------------------------------------------------------- tests
@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_training_loss_falls_and_ranks_agree(ranks, scenario):
    r0, r1 = ranks[0][scenario], ranks[1][scenario]
    for res in (r0, r1):
        boundaries = [[i["boundary"] for i in infos] for infos in res["infos"]]
        assert boundaries == [[False, True]] * 3
        assert all(infos[-1]["applied"] for infos in res["infos"])
        assert all(math.isfinite(infos[-1]["grad_norm"]) for infos in res["infos"])
    # linear decay over TOTAL_UPDATES: lr reported for updates 1..3
    base = r0["infos"][0][-1]["lr"]
    lrs = [infos[-1]["lr"] for infos in r0["infos"]]
    assert lrs == pytest.approx([base * (1 - u / TOTAL_UPDATES) for u in range(3)])
    mean_losses = [(a + b) / 2 for a, b in zip(r0["losses"], r1["losses"])]
    assert mean_losses[0] > mean_losses[1] > mean_losses[2], mean_losses
    _assert_same_state(r0["state_u3"], r1["state_u3"])
    # original module, original names (no "module." prefix)
    assert not any(k.startswith("module.") for k in r0["state_u3"])
    assert r0["module_names"][0] in r0["state_u3"]


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_matches_single_process_reference(ranks, scenario):
    _, make, _, lr = SCENARIOS[scenario]
    ref_state, ref_norms = _reference_state(make, lr, updates=2, value=make is _value_model)
    res = ranks[0][scenario]
    diff = _max_diff(ref_state, res["state_u2"])
    moved = _max_diff(make(0).state_dict(), res["state_u2"])
    assert moved > lr  # the updates really changed weights (Adam moves ~lr per step)
    assert diff < 1e-5, f"{scenario}: max |ds - reference| = {diff:.2e}"
    ds_norms = [infos[-1]["grad_norm"] for infos in res["infos"][:2]]
    assert ds_norms == pytest.approx(ref_norms, rel=1e-4)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_checkpoint_resume_is_exact(ranks, scenario):
    for res in ranks:
        r = res[scenario]
        _assert_same_state(r["resumed_state_u2"], r["state_u2"])
        assert r["resumed_loss_u3"] == r["losses"][2]
        assert r["resumed_infos_u3"] == r["infos"][2]  # same grad norm, same lr (scheduler restored)
        _assert_same_state(r["resumed_state_u3"], r["state_u3"])


@pytest.mark.parametrize("scenario", ["nan_zero0", "nan_zero2", "nan_zero3", "nan_zero2_bf16"])
def test_nonfinite_loss_skips_the_window_on_all_ranks(ranks, scenario):
    r0, r1 = ranks[0][scenario], ranks[1][scenario]
    for res in (r0, r1):
        assert res["skipped_updates"] == 1
        assert res["nonfinite_losses"] == 1
        assert res["infos_u1"][-1]["applied"]
        skipped = res["infos_u2"][-1]
        assert skipped["boundary"] and not skipped["applied"]
        assert skipped["grad_norm"] == math.inf
        # weights (and weight decay) untouched by the poisoned window
        _assert_same_state(res["state_after_skip"], res["state_before"])
        after = res["infos_u3"][-1]
        assert after["applied"] and math.isfinite(after["grad_norm"])
        assert after["lr"] == skipped["lr"]  # the LR schedule did not advance on the skip
        assert all(bool(torch.isfinite(t).all()) for t in res["state_u3"].values())
        assert _max_diff(res["state_u3"], res["state_before"]) > 0
    _assert_same_state(r0["state_u3"], r1["state_u3"])


def test_zero3_refuses_loss_from_a_method_called_directly(ranks):
    for res in ranks:
        assert res["zero3_direct_call"]["error"] and "call_method" in res["zero3_direct_call"]["error"]


def test_single_process_engine_bf16_offload(tmp_path):
    (res,) = _spawn_ranks(tmp_path, timeout_s=120, world=1, target=_single_main)
    assert res["world"] == 1 and res["accum"] == 2
    assert res["losses"][0] > res["losses"][1] > res["losses"][2], res["losses"]
    assert {t.dtype for t in res["state"].values()} == {torch.bfloat16}
    assert set(res["state"]) == set(_lm_model(0).state_dict())


def test_one_rank_zero0_skips_the_allreduce_and_matches_the_torch_engine(tmp_path):
    (res,) = _spawn_ranks(tmp_path, timeout_s=120, world=1, target=_zero0_single_main)
    assert res["allreduce"] is False and res["fused"] == [True]
    assert res["live_is_weights"] and not res["copy_is_weights"]
    ref_state, ref_norms = _reference_state(_lm_model, LM_LR, updates=2, value=False)
    assert _max_diff(ref_state, res["state"]) < 1e-6
    assert res["grad_norms"] == pytest.approx(ref_norms, rel=1e-5)
