"""Imports point down (../shared/DESIGN.md, "Layers"), lazy imports inside functions included.

    cli.py > api.py > stages/, eval/ > driver/, cluster/ > workers/ > backends/, feedback/
           > models/, tracking/ > algo/, data/, config/, utils.py, storage.py

A module may import its own layer or lower ones. A helper two upper layers need moves down.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "rlhf_dist"
LAYERS = [
    {"cli"}, {"api"}, {"stages", "eval"}, {"driver", "cluster"}, {"workers"}, {"backends", "feedback"},
    {"models", "tracking"}, {"algo", "data", "config", "rewards", "utils", "storage"},
]
RANK = {name: depth for depth, names in enumerate(LAYERS) for name in names}
# Known exceptions, each with its reason (keep this list short).
ALLOWED: set[tuple[str, str]] = set()
# (importing unit, imported module): one module, not its whole unit.
ALLOWED_MODULES = {
    # The weight-sync transports' registry: the schema's choices and the rules read each transport's declared
    # properties (devices, colocation, vLLM), and a transport is one file beside its code. The registry and the
    # transports import nothing above config at module level (no torch either: tests/unit/test_fast_cli.py).
    ("config", "rlhf_dist.backends.sync.registry"),
}


def _unit(module: str) -> str | None:
    """'rlhf_dist.driver.actors' -> 'driver'; the package root itself -> None."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "rlhf_dist" else None


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return found


def upward_imports() -> list[str]:
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__" or own not in RANK:
            continue
        for line, module in _imports(path):
            target = _unit(module)
            if target is None or target not in RANK or (own, target) in ALLOWED or (own, module) in ALLOWED_MODULES:
                continue
            if RANK[target] < RANK[own]:
                problems.append(f"rlhf_dist/{rel}:{line}: {own} imports {module} (a higher layer)")
    return problems


def test_every_package_is_in_a_layer():
    units = {p.name.removesuffix(".py") for p in PACKAGE.iterdir()
             if (p.is_dir() and any(p.glob("*.py"))) or (p.suffix == ".py" and p.name != "__init__.py")}
    assert units <= set(RANK), f"place these in LAYERS: {sorted(units - set(RANK))}"


def test_imports_point_down():
    assert upward_imports() == []


# Which parts of the package may import each engine library (the style guide: Ray only in workers/ and
# driver/ — cluster/ submits jobs to a Ray cluster —, DeepSpeed only in backends/train/, vLLM only in
# backends/rollout/; backends/patches.py holds the patches of both, with the versions they target).
ENGINE_HOMES = {
    "ray": ("workers/", "driver/", "cluster/"),
    "deepspeed": ("backends/train/", "backends/patches.py"),
    "vllm": ("backends/rollout/", "backends/patches.py"),
}


def test_engine_libraries_stay_in_their_layer():
    problems = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        for line, module in _imports(path):
            lib = module.split(".")[0]
            if lib in ENGINE_HOMES and not rel.startswith(ENGINE_HOMES[lib]):
                problems.append(f"rlhf_dist/{rel}:{line}: imports {module}")
    assert problems == []
