"""Placement groups and bundles as rlhf_dist/workers/group.py makes them, laid on nodes and devices.

    groups = make_groups(cfg)                 # one group per active role, or one shared (cluster.colocate)
    layout = place(groups, hardware)          # bundle -> node (first fit, PACK), actor -> devices

Ray's PACK strategy puts a group's bundles on as few nodes as it can; first fit in group order
mirrors that. A bundle never spans nodes. Fractional GPUs share a device.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field

from rlhf_dist.config import RLHFConfig
from rlhf_dist.config.topology import placement_layout, resources

EPS = 1e-9


class PlanError(ValueError):
    """The plan cannot be made: unknown model size, bad hardware spec."""


@dataclass(frozen=True)
class Hardware:
    """The cluster to plan for. None = not checked (unknown)."""

    nodes: int = 1
    gpus_per_node: int = 0
    gpu_mem_gib: float = 80.0
    cpus_per_node: float | None = None
    ram_gib: float | None = None

    def describe(self, device: str) -> str:
        cpus = f"{self.cpus_per_node:g} CPUs" if self.cpus_per_node else "CPUs unchecked"
        ram = f"{self.ram_gib:.4g} GiB RAM" if self.ram_gib else "RAM unchecked"
        gpus = f"{self.gpus_per_node} GPUs x {self.gpu_mem_gib:g} GiB, " if device == "cuda" else ""
        return f"{self.nodes} node{'s' if self.nodes > 1 else ''} x ({gpus}{cpus}, {ram})"


_SPEC_KEYS = {"nodes": int, "gpus_per_node": int, "gpu_mem_gib": float, "cpus_per_node": float, "ram_gib": float}


def parse_hardware(spec: str | None, cfg: RLHFConfig) -> Hardware:
    """'nodes=2,gpus_per_node=8,gpu_mem_gib=80' over defaults (CPU: this machine; CUDA: 1 x 8 x 80 GiB)."""
    if cfg.cluster.device == "cpu":
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
        values: dict = {"cpus_per_node": float(cfg.cluster.local_num_cpus or os.cpu_count() or 1), "ram_gib": ram}
    else:
        values = {"gpus_per_node": 8}
    for item in filter(None, (spec or "").split(",")):
        key, _, raw = item.partition("=")
        key = key.strip()
        if key not in _SPEC_KEYS or not raw:
            raise PlanError(f"--cluster: '{item}' is not KEY=VALUE with KEY in {', '.join(_SPEC_KEYS)}")
        try:
            values[key] = _SPEC_KEYS[key](raw)
        except ValueError:
            raise PlanError(f"--cluster: {key} must be a number (got '{raw}')") from None
        if values[key] <= 0:
            raise PlanError(f"--cluster: {key} must be > 0")
    return Hardware(**values)


@dataclass
class Bundle:
    """One bundle of a placement group and the actors (role, rank, gpus) scheduled into it."""

    group: str
    index: int
    cpu: float
    gpu: float
    actors: list[tuple[str, int, float]] = field(default_factory=list)
    node: int | None = None
    devices: list[int] = field(default_factory=list)  # GPU indices on its node


def make_groups(cfg: RLHFConfig) -> dict[str, list[Bundle]]:
    """Placement groups exactly as workers/group.py creates them (config/topology.py placement_layout)."""
    return {name: [Bundle(name, i, spec.cpu, spec.gpu,
                          [(role, rank, resources(cfg, role).gpus_per_actor) for role, rank in spec.actors])
                   for i, spec in enumerate(specs)]
            for name, specs in placement_layout(cfg).items()}


def _fits(free: dict[str, float], bundle: Bundle, hw: Hardware) -> bool:
    cpu_ok = hw.cpus_per_node is None or free["CPU"] + EPS >= bundle.cpu
    return cpu_ok and free["GPU"] + EPS >= bundle.gpu


def _free_text(free: dict[str, float]) -> str:
    cpu = "" if math.isinf(free["CPU"]) else f"{free['CPU']:g} CPU "
    return f"{cpu}{free['GPU']:g} GPU"


def place(groups: dict[str, list[Bundle]], hw: Hardware, device: str) -> list[str]:
    """Assign every bundle a node (and GPUs); returns problems (empty when everything is placed)."""
    gpus = hw.gpus_per_node if device == "cuda" else 0
    free = [{"CPU": hw.cpus_per_node or math.inf, "GPU": float(gpus)} for _ in range(hw.nodes)]
    problems = []
    want = sum(b.gpu for bs in groups.values() for b in bs)
    if want > gpus * hw.nodes + EPS:
        problems.append(f"the placement groups ask for {want:g} GPUs; the cluster has {hw.nodes} x {gpus} = "
                        f"{gpus * hw.nodes}: add nodes or lower cluster.*.num_actors / gpus_per_actor")
    for name, bundles in groups.items():
        used: list[int] = []
        for bundle in bundles:
            if bundle.gpu > gpus + EPS:
                problems.append(f"{name} bundle {bundle.index} needs {bundle.gpu:g} GPUs in one node; "
                                f"nodes have {gpus}")
                continue
            order = used + [n for n in range(hw.nodes) if n not in used]  # PACK: nodes this group uses first
            node = next((n for n in order if _fits(free[n], bundle, hw)), None)
            if node is None:
                left = ", ".join(f"node{n}: {_free_text(f)}" for n, f in enumerate(free))
                problems.append(f"{name} bundle {bundle.index} ({{CPU: {bundle.cpu:g}, GPU: {bundle.gpu:g}}}) "
                                f"does not fit: free {left}")
                continue
            free[node]["CPU"] -= bundle.cpu
            free[node]["GPU"] -= bundle.gpu
            bundle.node = node
            if node not in used:
                used.append(node)
    if device == "cuda" and not problems:
        problems += _assign_devices([b for bs in groups.values() for b in bs], hw)
    return problems


def _assign_devices(bundles: list[Bundle], hw: Hardware) -> list[str]:
    """GPU indices per bundle: whole devices for the integer part, a shared one for the fraction."""
    free = {n: [1.0] * hw.gpus_per_node for n in range(hw.nodes)}
    problems = []
    for bundle in bundles:
        slots, whole, frac = free[bundle.node], int(bundle.gpu + EPS), bundle.gpu - int(bundle.gpu + EPS)
        chosen = [d for d, f in enumerate(slots) if f > 1 - EPS][:whole]
        if frac > EPS:
            shared = [d for d, f in enumerate(slots) if d not in chosen and f + EPS >= frac]
            # prefer a device already partly taken, as Ray packs fractional requests
            shared.sort(key=lambda d: slots[d] > 1 - EPS)
            chosen += shared[:1]
        if len(chosen) < whole + (frac > EPS):
            problems.append(f"{bundle.group} bundle {bundle.index}: no device with {bundle.gpu:g} GPU free "
                            f"on node{bundle.node} (fragmented by fractional GPUs)")
            continue
        for d in chosen[:whole]:
            slots[d] = 0.0
        if frac > EPS:
            slots[chosen[-1]] -= frac
        bundle.devices = chosen
    return problems


def actor_devices(bundle: Bundle) -> dict[tuple[str, int], list[int]]:
    """Devices each actor of a placed bundle runs on: whole devices for >= 1 GPU, else a shared one."""
    room = {d: 1.0 for d in bundle.devices}
    if bundle.gpu - int(bundle.gpu + EPS) > EPS:
        room[bundle.devices[-1]] = bundle.gpu - int(bundle.gpu + EPS)
    out = {}
    for role, rank, gpus in sorted(bundle.actors, key=lambda a: -a[2]):  # whole-device actors first
        if gpus >= 1 - EPS:
            take = [d for d in bundle.devices if room[d] > 1 - EPS][: int(gpus + EPS)]
            for d in take:
                room[d] = 0.0
        else:
            fits = sorted((d for d in bundle.devices if room[d] + EPS >= gpus), key=lambda d: room[d] > 1 - EPS)
            take = [fits[0] if fits else max(room, key=room.__getitem__)]  # partly used devices first
            room[take[0]] -= gpus
        out[(role, rank)] = take
    return out
