"""What every role's Ray actor shares: config, thread limits, rendezvous, torch.distributed.

Actors are plain classes here; `workers/group.py` turns them into Ray actors and places
them. Rank 0 of a group picks the rendezvous address; every rank of a trainable group
joins one torch.distributed group (gloo on CPU, NCCL on GPU) for DeepSpeed.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import resources
from rlhf_dist.utils import free_port, seed_everything
from rlhf_dist.tracking.quiet import redirect_worker_output
from rlhf_dist.workers.devices import local_device_index
from rlhf_dist.workers.dispatch import Dispatch, Gather, dispatch


def node_ip() -> str:
    import ray

    return ray.util.get_node_ip_address()


def assigned_gpu_index() -> int:
    """This actor's CUDA index, from Ray's assignment. Outside a Ray actor (no GPU ids: bench/profile.py
    builds workers in its own process) LOCAL_RANK, else 0."""
    import ray

    index = local_device_index(ray.get_gpu_ids(), os.environ) if ray.is_initialized() else None
    return int(os.environ.get("LOCAL_RANK", "0")) if index is None else index


class RoleWorker:
    """Base of all role actors. `rank`/`world_size` are the rank inside this role's group."""

    # Name of this actor's <run>/logs/<name>-<rank>.log and .pid; None: the role. A stage that trains on a
    # role's resources under its own name (SFT on the policy's, workers/supervised.py) sets it.
    log_name: str | None = None

    def __init__(self, cfg: dict, role: str, rank: int, world_size: int):
        self.cfg = RLHFConfig.model_validate(cfg)
        self.role, self.rank, self.world_size = role, rank, world_size
        # Everything this actor prints (C++ warnings, tqdm bars, library logs) goes to its own file, so
        # Ray forwards nothing to the driver's console; exceptions still return as WorkerError.
        logs, name = Path(self.cfg.run.output_dir) / "logs", self.log_name or role
        self.log_path = redirect_worker_output(logs / f"{name}-{rank}.log")
        # Which process is which role and rank (to inspect, profile or kill one; replaced on a restart).
        logs.mkdir(parents=True, exist_ok=True)
        (logs / f"{name}-{rank}.pid").write_text(f"{os.getpid()}\n")
        # Several actors share a few cores on small machines: oversubscribed BLAS threads thrash.
        threads = resources(self.cfg, role).threads()
        torch.set_num_threads(threads)
        os.environ["OMP_NUM_THREADS"] = str(threads)
        # The GPU Ray assigned this actor (not a constant: workers/devices.py); LOCAL_RANK names it for DeepSpeed.
        self.local_rank, self.device = 0, torch.device("cpu")
        if self.cfg.cluster.device == "cuda":
            self.local_rank = assigned_gpu_index()
            self.device = torch.device("cuda", self.local_rank)
            # A vLLM engine picks its workers' devices itself; a CUDA context in its actor would only cost memory.
            if not (role == "rollout" and self.cfg.rollout.backend == "vllm"):
                torch.cuda.set_device(self.device)
        # Same seed on every rank: fresh heads / LoRA adapters start identical, runs repeat exactly.
        seed_everything(self.cfg.run.seed)

    def rendezvous(self) -> tuple[str, int]:
        """(address, port) for this group's torch.distributed store (called on rank 0)."""
        return node_ip(), free_port("")  # any interface: ranks on other nodes connect to it

    def init_distributed(self, master_addr: str, master_port: int) -> None:
        """Join this role's process group (a collective: every rank calls it together)."""
        from rlhf_dist.backends.train.dist import init_distributed, use_interface_of

        os.environ.update(MASTER_ADDR=master_addr, MASTER_PORT=str(master_port), RANK=str(self.rank),
                          WORLD_SIZE=str(self.world_size), LOCAL_RANK=str(self.local_rank))
        use_interface_of(node_ip())  # the interface of this node's Ray address, not the hostname's (multi-node)
        init_distributed("nccl" if self.device.type == "cuda" else "gloo")

    def ping(self) -> str:
        """Where this actor runs: "rank R on NODE_IP (pid P)" (the driver logs it after placing a group)."""
        return f"rank {self.rank} on {node_ip()} (pid {os.getpid()})"

    # ---- memory probe (tests and bench: what a phase adds to this process) ----
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def memory_probe_start(self, interval_s: float = 0.0005) -> int:
        """Sample this process's private resident memory (anonymous pages: tensors, not the object
        store's shared pages or mapped files) in a thread until memory_probe_stop. Returns the baseline."""
        self._probe = MemoryProbe(interval_s)
        return self._probe.baseline

    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def memory_probe_stop(self) -> int:
        """Peak private resident bytes above the baseline since memory_probe_start."""
        return self._probe.stop()

    # ---- peak memory per PPO step (metrics memory/<role>/peak_gib, driver/actors.py memory_peaks) ----
    @dispatch(Dispatch.ONE_TO_ALL, gather=Gather.LIST)
    def peak_memory(self) -> int:
        """This process's peak memory in bytes since the previous call (the first: since it started); resets it.

        CUDA: torch.cuda.max_memory_reserved, what PyTorch's caching allocator held at most (the CUDA
        context and NCCL buffers are outside it). CPU: the peak resident set size (VmHWM: tensors, the
        libraries, mapped object-store pages), reset by writing 5 to /proc/self/clear_refs; where the
        kernel refuses that, VmHWM stays the peak since the process started."""
        if self.device.type == "cuda":
            if not torch.cuda.is_initialized():  # no CUDA context here (a vLLM actor whose workers are processes)
                return 0
            peak = torch.cuda.max_memory_reserved(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return int(peak)
        return take_peak_rss()


def private_resident_bytes() -> int:
    """RssAnon of this process (Linux /proc/self/statm: resident minus shared pages)."""
    fields = Path("/proc/self/statm").read_text().split()
    return (int(fields[1]) - int(fields[2])) * os.sysconf("SC_PAGE_SIZE")


def take_peak_rss() -> int:
    """VmHWM of this process (peak resident bytes), then reset it to the current RSS (Linux clear_refs 5)."""
    status = Path("/proc/self/status").read_text()
    peak = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")) * 1024
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:  # not permitted (some sandboxes): the peak since start
        pass
    return peak


def release_free_heap() -> None:
    """Give the allocator's free pages back to the OS (glibc malloc_trim), so that later allocations
    show up in the resident size instead of silently reusing memory freed earlier."""
    import ctypes
    import ctypes.util

    libc = ctypes.util.find_library("c")
    if libc:
        ctypes.CDLL(libc).malloc_trim(0)


class MemoryProbe:
    def __init__(self, interval_s: float):
        import threading

        release_free_heap()
        self.baseline = self.peak = private_resident_bytes()
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, args=(interval_s,), daemon=True)
        self._thread.start()

    def _sample(self, interval_s: float) -> None:
        while not self._done.wait(interval_s):
            self.peak = max(self.peak, private_resident_bytes())

    def stop(self) -> int:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, private_resident_bytes())
        return self.peak - self.baseline
