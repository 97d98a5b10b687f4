"""The weight-sync transports (policy -> rollout engines), each registered with the properties the config
rules read. A new transport is ONE file in backends/sync/transports/ plus its test::

    # rlhf_dist/backends/sync/transports/my_transport.py  (every module of the folder is imported)
    from rlhf_dist.backends.sync.base import Waitable, WeightSync
    from rlhf_dist.backends.sync.registry import TRANSPORTS

    @TRANSPORTS.register("my_transport", devices=("cuda",), colocation="forbidden", needs_vllm=True,
                         why="<the physical reason behind the colocation rule>")
    class MyTransportSync(WeightSync):
        \"\"\"What travels how (the first paragraph is the option's description in the config reference).\"\"\"

        def send(self, index: int) -> list[Waitable]: ...   # start bucket `index` on both sides

Everything reads the registry: the schema's choices for rollout.sync_backend and their descriptions
(config/schema_parts.py), the rules that follow from the properties (config/checks.py _check_sync: which
devices, colocation required or forbidden, vLLM engines), and build_weight_sync (base.py). The transport's
calls on the groups are the workers' declared methods (workers/dispatch.py): a transport that needs a new
one adds a decorated method to PolicyWorker / RolloutWorker, and the groups have it.

The config schema imports this module to know the names (the one import from config/ into backends/,
tests/unit/test_layers.py), so transport modules import neither torch (`rlhf-dist config validate` stays
light, tests/unit/test_fast_cli.py) nor rlhf_dist.config (a circular import) at module level.

Plugins outside the package (or in a test) are named 'module:Class', e.g.
``rollout.sync_backend: my_pkg.sync:MySync``: looking the name up imports the module, whose decorator
registers the class (algo/registry.py explains why Ray actors need this form).
tests/unit/test_sync_registry.py registers a toy transport from the test file.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rlhf_dist.algo.registry import Entry, Registry

DEVICES = ("cpu", "cuda")
COLOCATION = ("any", "required", "forbidden")
SYNC_OPTION = "rollout.sync_backend"


@dataclass(frozen=True)
class Transport(Entry):
    """fn: the WeightSync subclass, built as fn(cfg.rollout, policy group, rollout group)."""

    devices: tuple[str, ...] = DEVICES  # the cluster.device values it works on
    # 'required': every engine worker takes its weights from a policy rank on its own GPU (cluster.colocate
    # true, one engine per policy rank at most); 'forbidden': engines must have GPUs of their own (no
    # colocation, whole GPUs per engine); 'any'
    colocation: str = "any"
    needs_vllm: bool = False  # the receiving end runs in vLLM's workers (rollout.backend 'vllm')
    why: str = ""  # the reason behind a colocation rule, quoted in its config error
    chosen_by: str = SYNC_OPTION  # the option that selects it (the LoRA adapter sync: rollout.lora_sync)


class TransportRegistry(Registry[Transport]):
    def register(self, name: str, **properties: Any) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        devices, colocation = properties.get("devices", DEVICES), properties.get("colocation", "any")
        if not devices or not set(devices) <= set(DEVICES):
            raise ValueError(f"{self.kind} '{name}': devices {devices!r} must be some of {DEVICES}")
        if colocation not in COLOCATION:
            raise ValueError(f"{self.kind} '{name}': colocation {colocation!r} is not one of {COLOCATION}")
        if colocation != "any" and not properties.get("why"):
            raise ValueError(f"{self.kind} '{name}': colocation '{colocation}' needs why= (its config error says it)")
        return super().register(name, **{**properties, "devices": tuple(devices)})

    def selectable(self, name: str) -> Transport:
        """The entry rollout.sync_backend names; ValueError if unknown or selected by another option."""
        if ":" not in name and name not in self.names():
            raise ValueError(f"unknown {self.kind} '{name}' (known: {', '.join(self.choices())}, or a registered "
                             "'module:Class')")
        entry = self.get(name)
        if entry.chosen_by != SYNC_OPTION:
            raise ValueError(f"{self.kind} '{name}' is chosen by {entry.chosen_by}, not {SYNC_OPTION} "
                             f"(known: {', '.join(self.choices())})")
        return entry

    def choices(self, **where: Any) -> tuple[str, ...]:
        """The names rollout.sync_backend may take (with properties equal to `where`, if given)."""
        return self.names(chosen_by=SYNC_OPTION, **where)

    def describe_choices(self) -> str:
        """"'name' (devices, needs, colocation) description; ..." for the schema's field description."""
        parts = []
        for entry in self:
            if entry.chosen_by != SYNC_OPTION:
                continue
            props = ["any device" if entry.devices == DEVICES else "/".join(entry.devices)]
            props += ["rollout.backend vllm"] * entry.needs_vllm
            props += {"required": ["cluster.colocate true"], "forbidden": ["not colocated"]}.get(entry.colocation, [])
            parts.append(f"'{entry.name}' ({', '.join(props)}) {entry.description.rstrip('.')}")
        return "; ".join(parts)


TRANSPORTS = TransportRegistry("weight-sync transport", SYNC_OPTION, "TRANSPORTS", Transport,
                               home="rlhf_dist.backends.sync.registry")

# The built-ins register themselves as their modules are imported (after TRANSPORTS exists).
import rlhf_dist.backends.sync.transports  # noqa: E402,F401
