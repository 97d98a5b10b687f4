"""`rlhf-dist feedback ...` as a user types it: import, annotator add, serve, stats, export, then `rlhf-dist rm`."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from rlhf_dist.feedback.client import HTTPAnnotator
from tests.feedback.conftest import FeedbackServer

pytestmark = pytest.mark.slow


def cli(*args: str, expect: int = 0) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", *args], capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == expect, result.stdout + result.stderr
    return result


def _longer_is_better(_prompt: str, left: str, right: str) -> tuple[str, float]:
    return ("left" if len(left) > len(right) else "right"), 0.85


def test_collect_export_and_train_a_reward_model(tmp_path):
    db = ["-c", "configs/tiny.yaml", "--feedback.db_url", f"sqlite:///{tmp_path / 'fb.sqlite'}",
          "--run.output_dir", str(tmp_path / "run")]
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"prompt": f"Describe item {i}.", "response_a": "good " * (1 + i % 5),
                                         "response_b": "ok " * (3 - i % 3), "source_a": "model-a",
                                         "source_b": "model-b", "seed": i}) + "\n" for i in range(24)))
    assert "added 24 pairs" in cli("feedback", "import", str(pairs), "--campaign", "round-a", *db,
                                   "--feedback.overlap", "2").stdout
    tokens = [cli("feedback", "annotator", "add", name, *db).stdout.strip().splitlines()[-1] for name in ("al", "bo")]
    assert all(len(t) >= 40 for t in tokens)

    server = FeedbackServer(db[3], tmp_path).start()
    try:
        runs = [HTTPAnnotator(server.url, t, "round-a", _longer_is_better).work() for t in tokens]
    finally:
        server.stop()
    assert [len(r.acked_vote_ids) for r in runs] == [24, 24]

    stats = json.loads(cli("feedback", "stats", "--json", *db).stdout)[0]
    assert (stats["votes"], stats["pairs_complete"], stats["pairwise_agreement"]) == (48, 24, 1.0)
    assert stats["per_annotator"] == {"al": 24, "bo": 24}

    out = tmp_path / "round-a.jsonl"
    shown = cli("feedback", "export", str(out), "--campaign", "round-a", *db).stdout
    assert "snapshot v1" in shown and "24 pairs from 48 votes" in shown
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 24 and all(r["preference"] in (0, 1) for r in rows)
    assert all(len(r["response_a" if r["preference"] == 0 else "response_b"]) >=
               len(r["response_b" if r["preference"] == 0 else "response_a"]) for r in rows)
    again = tmp_path / "again.jsonl"
    assert "snapshot v1" in cli("feedback", "export", str(again), "--campaign", "round-a", "--version", "1", *db).stdout
    assert again.read_bytes() == out.read_bytes()
    meta = json.loads((tmp_path / "round-a.jsonl.meta.json").read_text())
    assert (meta["version"], meta["votes"], meta["rows"]) == (1, 48, 24)

    trained = cli("rm", *db, "--data.pairs_path", str(out), "--data.pairs_format", "ab",
                  "--data.eval_pairs_path", str(out), "--reward.epochs", "1").stdout
    assert "accuracy" in trained


def test_cli_errors_are_one_line_and_write_nothing(tmp_path):
    db = ["--feedback.db_url", f"sqlite:///{tmp_path / 'fb.sqlite'}"]
    out = tmp_path / "x.jsonl"
    r = cli("feedback", "export", str(out), "--campaign", "nope", *db, expect=2)
    assert r.stderr.strip().splitlines() == ["rlhf-dist feedback export: --campaign: no campaign named 'nope' "
                                             "(known: none yet)"]
    assert not out.exists()
    r = cli("feedback", "import", str(tmp_path / "missing.jsonl"), "--campaign", "c", *db, expect=2)
    assert "missing.jsonl: no such file" in r.stderr and "Traceback" not in r.stderr
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"prompt": "p", "response_a": "a", "response_b": "b"}\n{"prompt": "p", "response_a": "a"}\n')
    r = cli("feedback", "import", str(bad), "--campaign", "c", *db, expect=3)
    assert f"{bad}:2: response_b: missing required field" in r.stderr
    assert "no campaigns yet" in cli("feedback", "stats", *db).stdout  # the good first row was not written
    r = cli("feedback", "stats", "--feedback.db_url", "mysql://x/y", expect=2)
    assert "feedback.db_url" in r.stderr and "Traceback" not in r.stderr
    r = cli("feedback", "serve", *db, "--feedback.port", "99999", expect=2)
    assert "feedback.port" in r.stderr


@pytest.mark.parametrize("content", ["", '{"prompt": "fine"}\n{"text": "no prompt field"}\n'], ids=["empty", "bad row"])
def test_generate_with_a_bad_prompts_file_creates_no_database(tmp_path, tiny_llama_dir, content):
    prompts, db = tmp_path / "p.jsonl", tmp_path / "fb.sqlite"
    prompts.write_text(content)
    r = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "feedback", "generate", "--policy", str(tiny_llama_dir),
                        "--prompts", str(prompts), "--campaign", "c", "--feedback.db_url", f"sqlite:///{db}"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode in (2, 3) and "p.jsonl" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not db.exists()  # the inputs are read before the database is opened


def test_generate_pairs_from_a_policy_records_what_made_them(tmp_path, tiny_llama_dir):
    from sqlalchemy import select

    from rlhf_dist.feedback.db import open_database, transaction
    from rlhf_dist.feedback.generate import policy_fingerprint
    from rlhf_dist.feedback.tables import Pair

    db_url = f"sqlite:///{tmp_path / 'fb.sqlite'}"
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"Tell me about item {i}."}) + "\n" for i in range(5)))
    common = ["-c", "configs/tiny.yaml", "--feedback.db_url", db_url, "--rollout.backend", "hf",
              "--rollout.sampling.max_new_tokens", "6"]
    out = cli("feedback", "generate", "--policy", str(tiny_llama_dir), "--prompts", str(prompts),
              "--campaign", "gen", "--limit", "4", "--seed", "7", *common).stdout
    assert "added 4 pairs" in out
    with transaction(open_database(db_url)) as session:
        pairs = list(session.scalars(select(Pair)))
    assert len(pairs) == 4
    source = f"{tiny_llama_dir.resolve()}@{policy_fingerprint(tiny_llama_dir)}"
    for pair in pairs:
        assert pair.source_a == pair.source_b == source and pair.seed == 7
        assert json.loads(pair.sampling_json)["max_new_tokens"] == 6
        logprobs = json.loads(pair.logprobs_json)
        assert 1 <= len(logprobs["a"]) <= 6 and all(lp <= 0 for lp in logprobs["a"] + logprobs["b"])

    r = cli("feedback", "generate", "--policy", str(tmp_path / "nope"), "--prompts", str(prompts),
            "--campaign", "gen", *common, expect=2)
    assert r.stderr.strip().splitlines()[-1].startswith("rlhf-dist feedback generate: --policy:")
    r = cli("feedback", "generate", "--policy", str(tiny_llama_dir), "--prompts", str(prompts), "--campaign", "g2",
            "--feedback.selection", "uncertainty", *common, expect=2)
    assert "--reward-model" in r.stderr
