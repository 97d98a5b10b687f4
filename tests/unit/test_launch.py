"""Submitting from a laptop (pure parts), launch scripts, the KubeRay manifest and the Dockerfiles."""

from __future__ import annotations

import re
import shlex
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

from rlhf_dist.cli import main
from rlhf_dist.cluster import submit
from rlhf_dist.cluster.submit import SubmitError
from rlhf_dist.config import load_config

SCRIPTS = [Path("launch/start_head.sh"), Path("launch/start_worker.sh"), Path("launch/submit.sh"),
           Path("launch/slurm/rlhf_dist.sbatch")]
DOCKERFILES = [Path("docker/Dockerfile"), Path("docker/Dockerfile.cpu")]


def _tool(name: str) -> str | None:
    """A linter from PATH or from this environment's bin (requirements/dev.txt installs both)."""
    local = Path(sys.executable).parent / name
    return shutil.which(name) or (str(local) if local.is_file() else None)


def _tree(root: Path, files: list[str]) -> None:
    for rel in files:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")


def test_upload_excludes_weights_outputs_vcs_and_venvs(tmp_path):
    _tree(tmp_path, ["rlhf_dist/models/builtin.py", "configs/a.yaml", ".venv/lib/x.py", ".git/HEAD", "runs/m.jsonl",
                     "exp/checkpoints/step_1/w", "policy/model.safetensors", "w.bin", "models/Llama/config.json",
                     "src/__pycache__/a.pyc", "notes.md"])
    files = {p.as_posix() for p, _ in submit.upload_files(tmp_path, submit.DEFAULT_EXCLUDES)}
    assert files == {"rlhf_dist/models/builtin.py", "configs/a.yaml", "notes.md"}


def test_upload_over_the_limit_names_the_biggest_files(tmp_path, monkeypatch):
    (tmp_path / "data.jsonl").write_bytes(b"0" * 4096)
    monkeypatch.setattr(submit, "UPLOAD_LIMIT", 1024)
    with pytest.raises(SubmitError, match=r"biggest: data\.jsonl .*--exclude"):
        submit.check_upload(tmp_path, submit.DEFAULT_EXCLUDES)


def test_config_must_be_uploaded(tmp_path):
    _tree(tmp_path, ["configs/a.yaml", "runs/b.yaml"])
    assert submit.config_in_working_dir(str(tmp_path / "configs/a.yaml"), tmp_path) == "configs/a.yaml"
    with pytest.raises(SubmitError, match="outside the working dir"):
        submit.config_in_working_dir("/etc/hosts", tmp_path)
    with pytest.raises(SubmitError, match="excluded path"):
        submit.config_in_working_dir(str(tmp_path / "runs/b.yaml"), tmp_path)


def test_entrypoint_joins_the_cluster_and_keeps_overrides():
    cfg = load_config("configs/tiny.yaml")
    entry = submit.build_entrypoint("ppo", "configs/tiny.yaml", ["ppo.steps=2", "run.name=a b"], cfg)
    assert shlex.split(entry) == ["python", "-m", "rlhf_dist.cli", "ppo", "--config", "configs/tiny.yaml",
                                  "--ppo.steps=2", "--run.name=a b", "--cluster.address=auto"]
    cfg = load_config("configs/tiny.yaml", ["cluster.address=10.0.0.1:6379"])
    assert "--cluster.address=auto" not in submit.build_entrypoint("rm", None, [], cfg, python="/opt/py")


def test_runtime_env_vars(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_API_KEY", "secret")
    env = submit.build_runtime_env(tmp_path, ["WANDB_API_KEY", "A=1=2"], ["*.jsonl"])
    assert env["env_vars"]["WANDB_API_KEY"] == "secret" and env["env_vars"]["A"] == "1=2"
    # the driver's own ray.init env vars must merge with the job's instead of conflicting
    assert env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"
    assert env["excludes"][-1] == "*.jsonl" and env["working_dir"] == str(tmp_path)
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(SubmitError, match="NOT_SET_HERE: not set"):
        submit.build_runtime_env(tmp_path, ["NOT_SET_HERE"])


def test_token_lookup_order(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert submit.read_token() is None
    _tree(tmp_path, [".ray/auth_token"])
    (tmp_path / ".ray/auth_token").write_text("home\n")
    assert submit.read_token() == "home"
    (tmp_path / "t").write_text("path")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "t"))
    assert submit.read_token() == "path"
    monkeypatch.setenv("RAY_AUTH_TOKEN", "env")
    assert submit.read_token() == "env"
    (tmp_path / "f").write_text("file")
    assert submit.read_token(str(tmp_path / "f")) == "file"


def test_unreachable_cluster_exits_4_with_a_hint(capsys):
    with socket.socket() as s:  # a loopback port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["status", "raysubmit_x", "--address", f"http://127.0.0.1:{port}"])
    assert code == 4
    assert "cannot reach the Ray dashboard" in capsys.readouterr().err


def test_launch_runtime_env_matches_submit():
    env = yaml.safe_load(Path("launch/runtime_env.yaml").read_text())
    assert env["excludes"] == submit.DEFAULT_EXCLUDES
    assert env["env_vars"]["RAY_OVERRIDE_JOB_RUNTIME_ENV"] == "1"


@pytest.mark.parametrize("script", SCRIPTS, ids=[s.name for s in SCRIPTS])
def test_scripts_parse_and_pass_shellcheck(script):
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert "ray stop" not in text  # stop only what was started (SLURM: end the --block steps)
    checker = _tool("shellcheck")
    assert checker is not None, "shellcheck missing: it is a dev requirement (make setup installs it)"
    out = subprocess.run([checker, str(script)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_slurm_script_plans_starts_ray_and_submits():
    text = Path("launch/slurm/rlhf_dist.sbatch").read_text()
    assert "ray start --head" in text and "ray start --address" in text and "--block" in text
    assert "rlhf_dist.cli plan" in text and "rlhf_dist.cli submit" in text and "RAY_AUTH_TOKEN_PATH" in text


def test_kuberay_rayjob_runs_a_real_preset_with_token_auth():
    job = yaml.safe_load(Path("launch/kuberay/rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["rlhf-dist", "ppo"] and "--cluster.address=auto" in argv
    config = argv[argv.index("--config") + 1].removeprefix("/app/")  # the image's WORKDIR is /app
    load_config(config)
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods + [job["spec"]["submitterPodTemplate"]]:
        env = {e["name"]: e for e in pod["spec"]["containers"][0]["env"]}
        assert env["RAY_AUTH_MODE"]["value"] == "token" and "secretKeyRef" in env["RAY_AUTH_TOKEN"]["valueFrom"]
    for pod in pods:
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["spec"]["volumes"])  # /dev/shm


def _requirements_in(dockerfile: str) -> set[str]:
    return set(re.findall(r"requirements/(\w+)\.txt", dockerfile))


def test_cpu_image_installs_the_ci_stack():
    """The CPU image installs exactly what CI installs: `make deps` (the hash-checked CPU lock), then `make setup`."""
    text = Path("docker/Dockerfile.cpu").read_text()
    makefile = Path("Makefile").read_text()
    run_lines = [line for line in text.splitlines() if line.startswith("RUN ")]
    assert "RUN make deps" in run_lines and "RUN make setup" in run_lines
    deps = makefile[makefile.index("$(DEPS_STAMP):"):].split("\n\n")[0]
    assert "--require-hashes --no-deps -r $(LOCK_CPU)" in deps
    assert re.search(r"^LOCK_CPU := requirements/lock/cpu\.txt$", makefile, re.M)
    assert "FROM python:3.11" in text


def test_cuda_image_installs_the_gpu_extra():
    text = Path("docker/Dockerfile").read_text()
    assert _requirements_in(text) >= {"base", "gpu", "models"}
    gpu = Path("requirements/gpu.txt").read_text()
    # vllm 0.33.0 pins torch 2.14.0 (CUDA); the CPU pin lives in cpu.txt, which this image never reads
    assert re.search(r"^vllm==0\.33\.0$", gpu, re.M) and re.search(r"^torch==2\.14\.0$", gpu, re.M)
    assert "cpu" not in _requirements_in(text)
    assert "python3.11" in text


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.name for d in DOCKERFILES])
def test_images_run_rlhf_dist_as_non_root(dockerfile):
    text = dockerfile.read_text()
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r'^ENTRYPOINT \["rlhf-dist"\]', text, re.M)
    scripts = tomllib.loads(Path("pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["rlhf-dist"] == "rlhf_dist.cli:main"
    linter = _tool("hadolint")
    assert linter is not None, "hadolint missing: it is a dev requirement (make setup installs it)"
    out = subprocess.run([linter, str(dockerfile)], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout


def test_docker_context_leaves_out_venvs_and_weights():
    ignored = set(Path(".dockerignore").read_text().split())
    assert {".git", ".venv", "runs", "**/*.safetensors", "checkpoints"} <= ignored
