"""Shared test setup: quiet, deterministic, small thread counts (2-core CI machine)."""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def tiny_llama_dir(tmp_path_factory):
    """A seeded tiny Llama + byte tokenizer as an HF dir."""
    from rlhf_dist.models.tiny import make_tiny_model_dir

    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-llama"), arch="llama", seed=0)


# Fast tiers first, so a unit failure shows in seconds, not after the 17-minute integration tier.
_TIER = {"unit": 0, "feedback": 1, "integration": 3, "e2e": 4}


def _tier(item: pytest.Item) -> int:
    parts = item.path.parts
    top = parts[parts.index("tests") + 1] if "tests" in parts and parts.index("tests") + 1 < len(parts) else ""
    return _TIER.get(top, 2)


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items: list[pytest.Item]) -> None:
    items.sort(key=_tier)  # stable: file and test order inside a tier are kept


# Every test's setup, call and teardown time, kept as a CI artefact (pytest prints only the slowest 25):
# runs/ci/durations.txt, slowest first; RLHF_DIST_DURATIONS names another file.
_DURATIONS: list[tuple[float, str, str]] = []


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    _DURATIONS.append((report.duration, report.when, report.nodeid))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not _DURATIONS:
        return
    from pathlib import Path

    out = Path(os.environ.get("RLHF_DIST_DURATIONS", "runs/ci/durations.txt"))
    out.parent.mkdir(parents=True, exist_ok=True)
    total = sum(d for d, _, _ in _DURATIONS)
    lines = [f"{d:9.2f}s {when:<8} {nodeid}" for d, when, nodeid in sorted(_DURATIONS, reverse=True)]
    out.write_text(f"# {len(_DURATIONS)} phases, {total:.0f} s in all (exit {exitstatus})\n" + "\n".join(lines) + "\n")
