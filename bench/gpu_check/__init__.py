"""`make gpu-check`: the GPU paths on one machine as one table that can fail, in at most ~8 minutes on one GPU.

    python -m bench.gpu_check [--out bench/results/gpu_check.json] [--budget-s 480] [--only ROW,ROW]

Rows (configs/tiny.yaml's config-built models through the `rlhf-dist` CLI; real Ray, DeepSpeed, vLLM on CUDA):
  environment        torch, vllm, deepspeed, transformers, ray, peft == requirements/lock/gpu.txt; torch's CUDA ==
                     nvcc's release (no nvcc: noted, not failed -- no preset builds a DeepSpeed CUDA op; CPU Adam
                     needs a C++ compiler + ninja only); ninja importable and on PATH      number: problems
  vllm-sleep         sleep(level=1) + wake_up: same seeded tokens; sleep(level=2) frees >= 90% of the engine's memory
  ppo-object-store   2 PPO steps, colocated, object-store sync, fp32                    max |dlogp| after sync
  ppo-cuda-ipc       2 steps, colocated, CUDA IPC sync, bf16
  ppo-lora-adapter   3 steps, LoRA policy, adapter-only sync (adapter versions 1 and 2 generate), fp32
  rm-zero3           `rlhf-dist rm`, reward.train ZeRO-3 on cluster.device cuda: exit 0, finite metrics   last loss
  cpu-adam           DeepSpeedCPUAdam == torch AdamW after one step (<= 1e-5)           max |diff|
  ppo-nccl / ppo-zero3-2rank (2 GPUs), ppo-rollout-tp2 (3 GPUs): SKIP on one GPU, the reason in the row
Each PPO row asserts, from metrics.jsonl: log-prob parity AFTER a sync (`rollout/logprob_max_abs_diff` of steps
>= 2: fp32 <= 1e-3, bf16 <= 2e-2), finite */grad_norm, no skipped updates, weights synced every step, and each
role's `memory/<role>/peak_gib` <= 1.15 x `rlhf-dist plan`'s per-actor figure.

Each row runs in its own process group with its own limit (runner.py): past it the group is killed and the row
is FAIL with the reason, and the next row runs. Exit 0: no row failed; 1: a row failed; 77 without CUDA (one
line, nothing run, nothing written: no row is ever faked). Logs and run dirs: bench/out/gpu_check/.
"""
