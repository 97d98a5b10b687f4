"""Text and JSON views of a Plan (what `rlhf-dist plan` prints)."""

from __future__ import annotations

from collections import Counter

from rlhf_dist.cluster.memory import GIB, MIB, Memory
from rlhf_dist.cluster.plan import DeviceLoad, Plan, group_loads


CELL = 11  # memory table column: fits "1051.3 GiB" and a space


def fmt(nbytes: float) -> str:
    """A size with its unit: GiB with one decimal, MiB below 0.1 GiB (tiny CPU models), '-' for none."""
    if nbytes == 0:
        return "-"
    return f"{nbytes / GIB:.1f} GiB" if abs(nbytes) >= 0.1 * GIB else f"{nbytes / MIB:.1f} MiB"


def _placement_lines(plan: Plan) -> list[str]:
    lines = []
    for name, bundles in plan.groups.items():
        if not bundles:
            continue
        shapes = Counter(f"{{CPU: {b.cpu:g}{f', GPU: {b.gpu:g}' if b.gpu else ''}}}" for b in bundles)
        nodes = Counter(f"node{b.node}" for b in bundles if b.node is not None)
        where = ", ".join(f"{n} x{c}" for n, c in sorted(nodes.items())) or "not placed"
        roles = "+".join(sorted({r for b in bundles for r, _, _ in b.actors})) or "no actor"
        bundle_text = ", ".join(f"{c} x {s}" for s, c in shapes.items())
        lines.append(f"  {name:<10} {bundle_text} -> {where}  [{roles}]")
    return lines


def _memory_lines(plan: Plan) -> list[str]:
    names = ("params", "grads", "optim", "act-train", "act-infer", "sync", "vllm-w", "kv", "ctx", "peak", "host")
    head = f"  {'role':<10}" + "".join(f"{n:>{CELL}}" for n in names)
    lines = [head]
    for role in ("policy", "critic", "reference", "reward", "rollout"):
        m: Memory | None = plan.memory.get(role)
        if m is None:
            continue
        act = m.activations
        values = (m.params, m.grads, m.optimizer, act.get("train", 0), act.get("inference", 0), m.sync + m.sync_rank0,
                  m.vllm_weights, m.kv_cache, m.context + m.nccl, m.peak, m.host)
        lines.append(f"  {role:<10}" + "".join(f"{fmt(v):>{CELL}}" for v in values))
    return lines


def _load_lines(loads: list[DeviceLoad]) -> list[str]:
    lines = []
    for label, load in group_loads(loads):
        roles = Counter(r for r, _ in load.members)
        who = " + ".join(f"{r}{f' x{c}' if c > 1 else ''}" for r, c in roles.items()) or "nothing"
        cap = ""
        if load.capacity != float("inf"):
            cap = f" / {fmt(load.capacity)} ({100 * load.peak / load.capacity:.0f}%)"
        extra = f" + {fmt(load.peak - load.resident)} during {load.phase}" if load.peak > load.resident else ""
        lines.append(f"  {label:<26} {fmt(load.resident)} resident{extra} = {fmt(load.peak)}{cap}  [{who}]")
    return lines


def render_plan(plan: Plan, config_name: str = "") -> str:
    cfg, hw = plan.cfg, plan.hardware
    layout = ("colocated (one shared placement group)" if cfg.cluster.colocate
              else "disaggregated (one placement group per role)")
    lines = [f"plan {config_name}".rstrip(),
             f"hardware: {hw.describe(cfg.cluster.device)}; device {cfg.cluster.device}, {layout}",
             "", "roles"]
    for info in plan.roles:
        per = f"{info.cpus:g} CPU" + (f" {info.gpus:g} GPU" if info.gpus else "")
        lines.append(f"  {info.role:<10} {info.actors:>3} x {per:<15} {info.model}")
        lines.append(f"  {'':<10} {'':>3}   {'':<15} {info.parallel}")
    lines += ["", "placement groups (bundles -> nodes)"] + _placement_lines(plan)
    lines += ["", "memory per actor (a TP engine: per device; rank 0, which sends the weights; peak = resident + "
              "worst phase, kept by the allocator; host = its process RAM)"]
    lines += _memory_lines(plan)
    unit = ("GPU (the sum of its actors' peaks, each kept by its allocator; an upper bound where trainers empty "
            "their caches for sleeping engines)"
            if cfg.cluster.device == "cuda" else "node RAM (the models live in RAM on CPU)")
    lines += ["", f"per {unit}"] + _load_lines(plan.devices)
    if plan.hosts:
        lines += ["", "host RAM per node (loading copies, offloaded states, weight-sync copies)"]
        lines += _load_lines(plan.hosts)
    if plan.notes:
        lines += ["", "notes"] + [f"  - {n}" for n in plan.notes]
    lines.append("")
    if plan.fits:
        worst = max(plan.devices, key=lambda d: d.peak / d.capacity, default=None)
        usage = ""
        if worst is not None and worst.capacity != float("inf"):
            usage = f" (highest: {worst.name} at {100 * worst.peak / worst.capacity:.0f}%)"
        lines.append(f"OK: the plan fits{usage}")
    else:
        lines.append("DOES NOT FIT:")
        lines += [f"  - {p}" for p in plan.problems]
    return "\n".join(lines)


def plan_to_dict(plan: Plan) -> dict:
    """Machine-readable plan (`rlhf-dist plan --json`): bytes, not GiB."""
    return {
        "fits": plan.fits,
        "problems": plan.problems,
        "notes": plan.notes,
        "hardware": vars(plan.hardware),
        "roles": [vars(r) for r in plan.roles],
        "memory": {role: {"resident": m.resident, "peak": m.peak, "params": m.params, "grads": m.grads,
                          "optimizer": m.optimizer, "activations": m.activations, "sync": m.sync,
                          "vllm_weights": m.vllm_weights, "kv_cache": m.kv_cache, "kv_tokens": m.kv_tokens,
                          "context": m.context, "nccl": m.nccl, "host": m.host, "host_transient": m.host_transient,
                          "sync_rank0": m.sync_rank0, "host_sync_rank0": m.host_sync_rank0}
                   for role, m in plan.memory.items()},
        "placement": {name: [{"cpu": b.cpu, "gpu": b.gpu, "node": b.node, "devices": b.devices,
                              "actors": [f"{r}[{k}]" for r, k, _ in b.actors]} for b in bundles]
                      for name, bundles in plan.groups.items()},
        "devices": [vars(d) for d in plan.devices],
        "hosts": [vars(d) for d in plan.hosts],
    }
