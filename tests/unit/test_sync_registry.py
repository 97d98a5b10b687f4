"""Weight-sync transports register themselves (backends/sync/registry.py): the built-ins with their properties,
the schema's choices and the config rules read them, and a transport defined in this file only (no other
module touched) is a valid rollout.sync_backend that build_weight_sync builds. tests/integration/
test_registries.py runs a PPO step with the same kind of toy transport on the real engines."""

from __future__ import annotations

import pytest

from rlhf_dist.backends.sync import build_weight_sync
from rlhf_dist.backends.sync.registry import TRANSPORTS, Transport
from rlhf_dist.backends.sync.transports.lora import AdapterSync
from rlhf_dist.backends.sync.transports.object_store import ObjectStoreSync
from rlhf_dist.config import ConfigError, RolloutConfig, load_config
from rlhf_dist.config.reference import markdown_reference

SENT: list[int] = []  # bucket indices the toy transport sent


@TRANSPORTS.register("toy_store", devices=("cpu",))
class ToyStoreSync(ObjectStoreSync):
    """The object-store path, counting the buckets it sends."""

    def send(self, index: int):
        SENT.append(index)
        return super().send(index)


@pytest.fixture
def scratch(monkeypatch):
    """Transports registered inside a test vanish after it (the registry is process-wide)."""
    monkeypatch.setattr(TRANSPORTS, "_entries", dict(TRANSPORTS._entries))
    monkeypatch.setattr(TRANSPORTS, "_aliases", dict(TRANSPORTS._aliases))


def _cuda(*overrides: str, colocate: bool = False):
    gpus = ["cluster.policy.gpus_per_actor=0.3", "cluster.colocate=true"] if colocate else []
    share = 0.2 if colocate else 1
    base = ["cluster.device=cuda", *(f"cluster.{r}.gpus_per_actor={share}" for r in
                                     ("policy", "critic", "reference", "reward", "rollout"))]
    return load_config("configs/tiny.yaml", base + gpus + list(overrides))


def _error(*overrides: str, colocate: bool = False, cuda: bool = True) -> str:
    with pytest.raises(ConfigError) as err:
        _cuda(*overrides, colocate=colocate) if cuda else load_config("configs/tiny.yaml", list(overrides))
    return str(err.value)


def test_builtins_are_registered_with_their_properties():
    builtins = {e.name: (e.devices, e.colocation, e.needs_vllm, e.chosen_by) for e in TRANSPORTS
                if e.fn.__module__.startswith("rlhf_dist.")}
    assert builtins == {
        "object_store": (("cpu", "cuda"), "any", False, "rollout.sync_backend"),
        "nccl": (("cuda",), "forbidden", True, "rollout.sync_backend"),
        "cuda_ipc": (("cuda",), "required", True, "rollout.sync_backend"),
        "lora_adapter": (("cpu", "cuda"), "any", True, "rollout.lora_sync"),
    }
    assert all(isinstance(e, Transport) and len(e.description) > 20 for e in TRANSPORTS)
    assert TRANSPORTS.choices(colocation="required") == ("cuda_ipc",)


def test_the_schema_and_its_reference_list_the_selectable_transports():
    field = RolloutConfig.model_fields["sync_backend"]
    assert field.annotation is str and field.default == "object_store"
    row = next(line for line in markdown_reference().splitlines() if line.startswith("| `rollout.sync_backend` "))
    for name in ("object_store", "nccl", "cuda_ipc"):
        assert f"'{name}'" in field.description and f"'{name}'" in row
    assert "'lora_adapter'" not in field.description  # chosen by rollout.lora_sync
    assert "'nccl' (cuda, rollout.backend vllm, not colocated)" in row


def test_a_transport_from_this_file_validates_and_is_built():
    for name in ("toy_store", f"{__name__}:ToyStoreSync"):
        cfg = load_config("configs/tiny.yaml", [f"rollout.sync_backend={name}", "rollout.sync_buckets_in_flight=3"])
        sync = build_weight_sync(cfg, policy=None, rollout=None)  # the groups are only called by sync()
        assert type(sync) is ToyStoreSync and sync.window == 3 and sync.plan is None
    # its declared devices are enforced like a built-in's
    assert "rollout.sync_backend 'toy_store' needs cluster.device 'cpu'" in _error("rollout.sync_backend=toy_store")


def test_build_weight_sync_picks_the_adapter_sync_by_rollout_lora_sync():
    cfg = _cuda("policy.lora.enabled=true", "rollout.backend=vllm", "rollout.sync_backend=nccl")
    assert type(build_weight_sync(cfg, None, None)) is AdapterSync
    merged = _cuda("policy.lora.enabled=true", "rollout.lora_sync=merged", "rollout.sync_backend=nccl")
    assert type(build_weight_sync(merged, None, None)).__name__ == "NcclSync"


@pytest.mark.parametrize("value, message", [
    ("nccll", "rollout.sync_backend: unknown weight-sync transport 'nccll' (known: cuda_ipc, nccl, object_store"),
    ("lora_adapter", "'lora_adapter' is chosen by rollout.lora_sync, not rollout.sync_backend"),
    ("no_such_module:Sync", "weight-sync transport 'no_such_module:Sync' cannot be loaded: No module"),
    ("rlhf_dist.backends.sync.base:WeightSync", "is not registered: decorate it with @TRANSPORTS.register(name, ...) "
                                                "from rlhf_dist.backends.sync.registry"),
])
def test_bad_names_fail_with_one_line_naming_the_choices(value, message):
    assert message in _error(f"rollout.sync_backend={value}", cuda=False)


@pytest.mark.usefixtures("scratch")
def test_the_colocation_rules_come_from_the_registered_properties():
    @TRANSPORTS.register("toy_same_gpu", devices=("cuda",), colocation="required", why="toys share one GPU")
    class ToySameGpu(ObjectStoreSync):
        """A toy that only reaches an engine on its own GPU."""

    text = _error("rollout.sync_backend=toy_same_gpu")
    assert "rollout.sync_backend 'toy_same_gpu' needs cluster.colocate true: toys share one GPU" in text
    assert "use 'nccl' or 'object_store' when disaggregated" in text  # vllm is tiny's engine
    assert _cuda("rollout.sync_backend=toy_same_gpu", colocate=True).rollout.sync_backend == "toy_same_gpu"
    # the same-GPU layout rules apply to it as to cuda_ipc
    assert "'toy_same_gpu' with rollout.num_engines 3 > cluster.policy.num_actors 2" in _error(
        "rollout.sync_backend=toy_same_gpu", "rollout.num_engines=3", colocate=True)
    # and a transport that forbids colocation now names both same-GPU transports as the fix
    text = _error("rollout.sync_backend=nccl", colocate=True)
    assert "NCCL refuses two ranks on one device; use sync_backend 'cuda_ipc' or 'toy_same_gpu'" in text


@pytest.mark.usefixtures("scratch")
@pytest.mark.parametrize("properties, error, message", [
    ({"colocation": "sometimes"}, ValueError, "colocation 'sometimes' is not one of"),
    ({"colocation": "forbidden"}, ValueError, "colocation 'forbidden' needs why="),
    ({"devices": ("tpu",)}, ValueError, "devices ('tpu',) must be some of"),
    ({"bandwidth": 1}, TypeError, "unknown properties ['bandwidth']"),
])
def test_a_bad_registration_fails_when_its_module_is_imported(properties, error, message):
    with pytest.raises(error, match=message.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        TRANSPORTS.register("toy_bad", **properties)
