"""NCCL transport (CUDA): policy rank 0 broadcasts each bucket GPU-to-GPU into every vLLM worker.

One communicator spans policy rank 0 (rank 0) and every vLLM worker of every engine (ranks 1..N; an
engine with tensor parallel size t owns t consecutive ranks). It is built with vLLM's
StatelessProcessGroup + PyNcclCommunicator (backends/rollout/nccl_sync.py), so it never touches the
trainers' own torch.distributed group. The tensors' names, dtypes and shapes come from the bucket plan,
so the workers allocate their receive buffers while the policy ranks gather. NCCL refuses two ranks
on one GPU: colocated engines use cuda_ipc (config/rules.py enforces it).

Written against vLLM 0.32/0.33; not exercised on the CPU machines CI uses (`make gpu-check` runs it).
"""

from __future__ import annotations

from rlhf_dist.backends.sync.base import Waitable, WeightSync


class NcclSync(WeightSync):
    window = 1  # one communicator: buckets go through it one after the other

    def setup(self) -> None:
        """All members join at once: policy rank 0, then engine e's TP workers as ranks 1 + e * TP ..."""
        tp = self.cfg.tensor_parallel_size
        world = 1 + tp * self.rollout.num_actors
        host, port = self.policy.weight_broadcast_rendezvous()
        joins = self.rollout.init_weight_broadcast(host, port, tp, world)
        self.policy.init_weight_broadcast(host, port, world).result(timeout_s=self.cfg.sync_timeout_s)
        joins.result(timeout_s=self.cfg.sync_timeout_s)

    def send(self, index: int) -> list[Waitable]:
        assert self.plan is not None
        receiving = self.rollout.receive_weights(self.plan[index].tensors)
        return [self.policy.broadcast_weight_bucket(index), receiving]
