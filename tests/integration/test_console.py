"""A quiet console: worker output lands in <run>/logs/, errors still reach the driver, `rm` stays short."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
import ray
from ray import cloudpickle

from rlhf_dist.config import load_config
from rlhf_dist.workers.base import RoleWorker
from rlhf_dist.workers.group import ActorGroup, WorkerError, create_placements, remove_placements

pytestmark = pytest.mark.slow
REPO = Path(__file__).resolve().parents[2]
# the actor class below travels by value: Ray's workers need not import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])


class NoisyWorker(RoleWorker):
    def shout(self, text: str) -> str:
        print(f"{text} print")
        print(f"{text} stderr", file=sys.stderr)
        os.write(2, f"{text} fd2 (like a C++ warning)\n".encode())
        logging.getLogger("rlhf_dist.noisy").warning("%s logging", text)
        return str(self.log_path)

    def fail(self) -> None:
        raise ValueError("boom from the worker")


@pytest.mark.usefixtures("ray_cluster")
def test_worker_output_goes_to_its_log_file_not_to_ray(tmp_path):
    cfg = load_config("configs/tiny.yaml", [f"run.output_dir={tmp_path}"])
    placements = create_placements(cfg)
    group = ActorGroup("reference", NoisyWorker, cfg, placements["reference"], 1, distributed=False)
    try:
        marker = "noisy-marker-8c1f"
        [log_path] = group.each("shout", lambda a: a.shout.remote(marker)).result()
        with pytest.raises(WorkerError, match="reference rank 0 failed in 'fail'.*boom from the worker"):
            group.each("fail", lambda a: a.fail.remote()).result()
    finally:
        group.kill()
        remove_placements(placements)
    assert Path(log_path) == tmp_path / "logs" / "reference-0.log"
    text = Path(log_path).read_text()
    for kind in ("print", "stderr", "fd2", "logging"):
        assert f"{marker} {kind}" in text
    # what Ray would forward to the driver's console: the worker's own .out/.err files
    ray_logs = Path(ray._private.worker._global_node.get_logs_dir_path())
    forwarded = [p for p in ray_logs.glob("worker-*") if marker in p.read_text(errors="replace")]
    assert forwarded == []


def test_rm_console_is_short(tmp_path):
    out = subprocess.run([sys.executable, "-m", "rlhf_dist.cli", "rm", "-c", "configs/tiny.yaml",
                          "--run.output_dir", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                         timeout=600, env={**os.environ, "TERM": "dumb"})
    lines = (out.stdout + out.stderr).splitlines()
    assert out.returncode == 0, out.stderr[-2000:]
    assert len(lines) <= 60, "\n".join(lines)
    assert any(line.startswith("reward model saved to") for line in lines)
    assert '"accuracy"' in out.stdout
    assert not any("Loading weights" in line or "Warning" in line for line in lines)
