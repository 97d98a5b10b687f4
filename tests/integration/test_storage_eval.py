"""`rlhf-dist report`, `rlhf-dist eval` and the seed API on a run kept in S3: a real S3-compatible server on
loopback (moto's standalone server, the `s3` fixture), real tiny models, no Ray.

What a command reads comes down to the run's staging dir (storage.fetch_run); what it writes (report/,
eval.json, metrics) goes back to the URI; a URI that holds no run is one line and exit 2.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rlhf_dist import RLHFPipeline, storage
from rlhf_dist.cli import main

TINY = ["tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32"]
PPO_ROWS = [{"phase": "ppo", "step": s, "reward/score_raw": 0.1 * s, "kl/seq_k1": 0.5 * s, "policy/loss": -0.01 * s}
            for s in (1, 2, 3)]


def _spy_uploads(monkeypatch) -> list[str]:
    """Record what goes up (the real upload still runs)."""
    real, sent = storage.Remote.put_file, []

    def put_file(self, local, rel):
        sent.append(rel)  # relative to the run
        real(self, local, rel)

    monkeypatch.setattr(storage.Remote, "put_file", put_file)
    return sent


def test_report_of_a_run_in_s3(s3, tmp_path, monkeypatch, capsys):
    uri = "s3://bucket/runs/rep"
    remote = storage.Remote(uri)
    remote.write_text("metrics.jsonl", "".join(json.dumps(r) + "\n" for r in PPO_ROWS))
    remote.write_text("summary.json", json.dumps({"win_rate": 0.75}))
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "laptop"))  # a machine that never saw the run
    sent = _spy_uploads(monkeypatch)

    assert main(["report", "--run-dir", uri]) == 0
    assert f"report written to {uri}/report/report.md" in capsys.readouterr().out
    assert {storage.COMPLETE, "report.md", "report.html", "ppo_reward.png", "ppo_kl.png"} <= set(remote.files("report"))
    md = remote.read_text("report/report.md")
    assert "# Run report: rep" in md and f"Run directory: `{uri}`" in md
    assert "| PPO steps | 3 |" in md and "(summary.json win_rate) | 0.75 |" in md
    local = storage.staging_dir(uri) / "report"
    assert (local / "report.md").read_text() == md and (local / "ppo_kl.png").stat().st_size > 5_000
    assert sent and all(rel.startswith("report/") for rel in sent), sent  # the inputs are not sent back

    # new metrics up there: the next report reads them, not the copy staged here last time
    remote.write_text("metrics.jsonl", "".join(json.dumps({**r, "step": r["step"] + 3}) + "\n" for r in PPO_ROWS * 2))
    assert main(["report", "--run-dir", uri]) == 0
    assert "| PPO steps | 6 |" in remote.read_text("report/report.md")


@pytest.mark.parametrize("argv, expected", [
    (["report", "--run-dir", "s3://bucket/runs/none"], "rlhf-dist: report: s3://bucket/runs/none: no run there "
                                                       "(looked for metrics.jsonl, eval.json"),
    (["report", "--run-dir", "s3://no-such-bucket/runs/x"], "rlhf-dist: report: s3://no-such-bucket/runs/x: no run"),
    (["report", "--run-dir", "foo://x/y"], "rlhf-dist: report: run.output_dir foo://x/y: cannot open it"),
    (["report", "configs/tiny.yaml", "--run.output_dir=s3://bucket/runs/none"], "rlhf-dist: report: s3://bucket/"),
    (["eval", "configs/tiny.yaml", "--run.output_dir=s3://bucket/runs/none"],
     "rlhf-dist: eval: s3://bucket/runs/none: no run there (looked for policy, reward_model, metrics.jsonl"),
    (["report", "--run-dir", "runs/no-such-run"], "rlhf-dist: report: no run directory runs/no-such-run"),
])
def test_no_run_at_that_uri_is_one_line_and_exit_2(s3, tmp_path, monkeypatch, capsys, argv, expected):
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "staging"))
    assert main(argv) == 2
    out, err = capsys.readouterr()
    lines = [line for line in err.splitlines() if line.startswith("rlhf-dist")]
    assert len(lines) == 1 and lines[0].startswith(expected), err
    assert "Traceback" not in out + err
    assert not (tmp_path / "staging").exists() or not any((tmp_path / "staging").rglob("*.json*"))


def test_seed_api_then_eval_on_another_machine(s3, tmp_path, monkeypatch, capsys, tiny_llama_dir):
    uri = "s3://bucket/runs/api"
    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "m1"))
    pipe = RLHFPipeline("configs/tiny.yaml", TINY + [f"run.output_dir={uri}", f"reward_model.path={tiny_llama_dir}"])
    assert pipe.run_dir == storage.staging_dir(uri) and str(tmp_path / "m1") in pipe.store.url
    for i in range(16):
        good, bad = f"lovely great visit number {i}", f"AWFUL {i}!!"
        pipe.stage1_collect_feedback(f"Review place {i}.", good if i % 2 else bad, bad if i % 2 else good,
                                     preference=1 - i % 2)
    pipe.stage2_train_reward_model(num_epochs=1, batch_size=8)
    remote = storage.Remote(uri)
    assert storage.COMPLETE in remote.files("reward_model") and remote.read_text("reward_metrics.json")
    assert f"output_dir: {uri}" in remote.read_text("config.yaml")
    assert not Path("s3:").exists()  # a URI taken for a local path would show up as ./s3:/bucket/...
    storage.push_dir(remote, Path(tiny_llama_dir), "policy", last=())  # what a PPO stage exports

    monkeypatch.setenv("RLHF_DIST_STAGING", str(tmp_path / "m2"))  # another machine: nothing staged
    assert main(["eval", "configs/tiny.yaml", *[f"--{o}" for o in TINY], f"--run.output_dir={uri}",
                 "--reference", str(tiny_llama_dir), "--eval.judge=length", "--eval.num_prompts=4"]) == 0
    capsys.readouterr()
    ev = json.loads(remote.read_text("eval.json"))
    assert ev["win_rate"] == 0.5 and ev["kl"] == 0.0  # the policy against itself: an exact tie
    assert ev["reward_mean"] == ev["reward_mean_start"] and "rm_accuracy" in ev  # the RM came down from S3
    phases = [json.loads(line)["phase"] for line in remote.read_text("metrics.jsonl").splitlines()]
    assert "rm/train" in phases and phases[-1] == "eval"  # the history kept, the eval row added
    assert {"eval.png", "report.md"} <= set(remote.files("report"))
    assert (storage.staging_dir(uri).parent == tmp_path / "m2") and (storage.staging_dir(uri) / "eval.json").is_file()
