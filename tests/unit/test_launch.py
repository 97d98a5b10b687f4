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


def test_entrypoint_keeps_overrides_and_leaves_joining_to_the_driver():
    entry = submit.build_entrypoint("ppo", "configs/tiny.yaml", ["ppo.steps=2", "run.name=a b"])
    # no --cluster.address: the driver finds the job's cluster itself (test_submit.py runs it for real)
    assert shlex.split(entry) == ["python", "-m", "rlhf_dist.cli", "ppo", "--config", "configs/tiny.yaml",
                                  "--ppo.steps=2", "--run.name=a b"]


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


def test_slurm_script_plans_starts_ray_and_runs_the_driver():
    text = Path("launch/slurm/rlhf_dist.sbatch").read_text()
    directives = dict(re.findall(r"^#SBATCH (--[\w-]+)(?:=(\S+))?", text, re.M))
    assert directives["--nodes"] == "1"  # a one-node preset must not hold an idle node
    assert directives["--signal"] == "B:TERM@120" and "--requeue" in directives
    assert "--head" in text and "--address=" in text and "ray start \"$@\" --block" in text
    assert "rlhf_dist.cli plan" in text and 'rlhf_dist.cli "$stage"' in text and "(--resume auto)" in text
    assert "--num-cpus=\"$cpus\"" in text and "--num-gpus=\"$gpus\"" in text and '--cpus-per-task="$cpus"' in text
    assert "sleep 15" not in text and "ray status --address" in text  # the head is polled, with a timeout
    assert 'scontrol requeue "$SLURM_JOB_ID"' in text and "-eq 75" in text  # rlhf_dist.utils.EXIT_PREEMPTED
    token = re.search(r'RAY_AUTH_TOKEN_PATH="([^"]+)"', text).group(1)
    assert "$repo" not in token and "SLURM_SUBMIT_DIR" not in token  # never inside the checkout


def test_a_driver_inside_a_ray_job_joins_its_cluster():
    from rlhf_dist.driver.actors import join_address

    job = {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}", "RAY_ADDRESS": "10.0.0.1:6379"}
    assert join_address(None, job) == "10.0.0.1:6379"
    assert join_address(None, {"RAY_JOB_CONFIG_JSON_ENV_VAR": "{}"}) == "auto"
    assert join_address("auto", job) == "auto" and join_address("h:1", {}) == "h:1"
    assert join_address(None, {}) is None  # a private local cluster
    assert join_address(None, {"RAY_ADDRESS": "http://head:8265"}) is None  # a dashboard URL for `ray job submit`
    assert join_address(None, {"RAY_ADDRESS": "ray://head:10001"}) == "ray://head:10001"


def test_preflight_names_the_missing_modules(tmp_path):
    from rlhf_dist.cluster import preflight

    entry = preflight.preflight_entrypoint(sys.executable, ["yaml", "no_such_module_xyz"])
    out = subprocess.run(entry, shell=True, capture_output=True, text=True, timeout=60)
    assert out.returncode == 3 and preflight.missing_from_logs(out.stdout) == ["no_such_module_xyz"]
    ok = subprocess.run(preflight.preflight_entrypoint(sys.executable, ["yaml"]), shell=True, capture_output=True,
                        text=True, timeout=60)
    assert ok.returncode == 0 and preflight.missing_from_logs(ok.stdout) == []
    gone = subprocess.run(preflight.preflight_entrypoint(str(tmp_path / "nopython"), ["yaml"]), shell=True,
                          capture_output=True, text=True, timeout=60)
    assert gone.returncode != 0 and preflight.missing_from_logs(gone.stdout + gone.stderr) is None
    assert "vllm" in preflight.required_modules(load_config("configs/tiny.yaml"))
    assert preflight.is_local("http://127.0.0.1:8265") and not preflight.is_local("http://10.0.0.1:8265")


def test_submit_exit_codes_usage_2_unreachable_4(capsys, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"http://127.0.0.1:{port}"
    outside = tmp_path / "c.yaml"
    outside.write_text(Path("configs/tiny.yaml").read_text())
    assert main(["submit", str(outside), "--address", address]) == 2  # nothing reached the cluster
    assert "outside the working dir" in capsys.readouterr().err
    assert main(["submit", "configs/tiny.yaml", "--address", address, "--run.output_dir", str(tmp_path / "o")]) == 4
    assert main(["status", "x", "--address", address, "--bogus"]) == 2


def test_submit_script_works_from_any_directory(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = subprocess.run([str(Path("launch/submit.sh").resolve()), "configs/tiny.yaml", "--address",
                          f"http://127.0.0.1:{port}", "--run.output_dir", str(tmp_path / "o")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 4, out.stderr  # the config was found and validated; only the cluster is missing
    assert "cannot reach the Ray dashboard" in out.stderr


def test_kuberay_rayjob_runs_a_real_preset_with_token_auth():
    job = yaml.safe_load(Path("launch/kuberay/rayjob.yaml").read_text())
    assert (job["apiVersion"], job["kind"]) == ("ray.io/v1", "RayJob")
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[:2] == ["rlhf-dist", "ppo"] and "--cluster.address=auto" in argv
    config = argv[argv.index("--config") + 1].removeprefix("/app/")  # the image's WORKDIR is /app
    load_config(config)
    assert argv[argv.index("--resume") + 1] == "auto"  # a retried attempt continues from its checkpoint
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == "2.60.0"
    # the operator sends the token with its own dashboard calls only through authOptions (KubeRay v1.6+)
    secret = cluster["authOptions"]["secretName"]
    assert cluster["authOptions"]["mode"] == "token"
    header = Path("launch/kuberay/rayjob.yaml").read_text().split("apiVersion")[0]
    assert "v1.6+" in header and "wget" in header and "backoffLimit" in header
    env = {e["name"]: e for e in job["spec"]["submitterPodTemplate"]["spec"]["containers"][0]["env"]}
    assert env["RAY_AUTH_MODE"]["value"] == "token"
    assert env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": "auth_token"}
    pods = [cluster["headGroupSpec"]["template"]] + [g["template"] for g in cluster["workerGroupSpecs"]]
    for pod in pods:
        assert any(v.get("emptyDir", {}).get("medium") == "Memory" for v in pod["spec"]["volumes"])  # /dev/shm
        assert pod["spec"]["securityContext"]["fsGroup"] == 1000  # the image's user writes to /shared
        names = {e["name"] for e in pod["spec"]["containers"][0]["env"]}
        assert not names & {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"}  # set by the operator from authOptions


def _requirements_in(dockerfile: str) -> set[str]:
    return set(re.findall(r"requirements/(\w+)\.txt", dockerfile))


def test_cpu_image_installs_the_ci_stack():
    """The CPU image installs exactly what CI installs: `make deps`'s script (the hash-checked CPU lock), then
    `make setup`; the dependency layer copies only the locks and that script, so only they rebuild it."""
    text = Path("docker/Dockerfile.cpu").read_text()
    makefile = Path("Makefile").read_text()
    run_lines = [line for line in text.splitlines() if line.startswith("RUN ")]
    deps = makefile[makefile.index("$(DEPS_STAMP):"):].split("\n\n")[0]
    assert "\tsh requirements/install_deps.sh $(PYTHON) $(VENV)" in deps.splitlines()
    assert "RUN sh requirements/install_deps.sh python3 .venv" in run_lines
    assert run_lines[-1].endswith("make setup")
    script = Path("requirements/install_deps.sh").read_text()
    assert "--require-hashes --no-deps -r requirements/lock/cpu.txt" in script
    before = text[:text.index("RUN sh requirements/install_deps.sh")]
    copied = [src for line in re.findall(r"^COPY (.+)$", before, re.M) for src in line.split()[:-1]
              if not src.startswith("--")]
    assert copied == ["requirements/install_deps.sh", "requirements/lock/cpu.txt", "requirements/lock/cpu-torch.txt"]
    assert text.index("COPY --chown=rlhf:rlhf . .") > text.index("RUN sh requirements/install_deps.sh")
    assert re.search(r"^LOCK_CPU := requirements/lock/cpu\.txt$", makefile, re.M)
    assert "ARG BASE_IMAGE=python:3.11" in text  # FROM ${BASE_IMAGE}: a stand-in base where none can be pulled


def test_cuda_image_installs_the_gpu_extra():
    text = Path("docker/Dockerfile").read_text()
    assert _requirements_in(text) >= {"base", "gpu", "models"}
    gpu = Path("requirements/gpu.txt").read_text()
    # vllm 0.33.0 pins torch 2.14.0 (CUDA); the CPU pin lives in cpu.txt, which this image never reads
    assert re.search(r"^vllm==0\.33\.0$", gpu, re.M) and re.search(r"^torch==2\.14\.0$", gpu, re.M)
    assert "cpu" not in _requirements_in(text)
    assert "python3.11" in text


def test_cuda_image_prebuilds_every_deepspeed_op_a_preset_uses():
    """A DeepSpeed op the image lacks is JIT-compiled by every rank at start (minutes, a compiler per node)."""
    from rlhf_dist.backends.train.deepspeed_engine import deepspeed_config

    used = set()
    for preset in sorted(Path("configs").glob("*.yaml")):
        cfg = load_config(preset)
        for train in (cfg.sft.train, cfg.reward.train, cfg.ppo.policy_train, cfg.ppo.critic_train):
            ds = deepspeed_config(train, 1, cfg.policy.dtype, cfg.cluster.device)
            zero = ds["zero_optimization"]
            # what would need another op: NVMe offload (async_io), quantized ZeRO weights/gradients (quantizer)
            assert all(zero.get(k, {}).get("device", "cpu") == "cpu" for k in ("offload_optimizer", "offload_param"))
            assert not any(k.startswith("zero_quantized") for k in zero)
            if "optimizer" in ds:  # DeepSpeed builds its own optimizer: DeepSpeedCPUAdam (offloaded AdamW)
                assert ds["optimizer"]["type"] == "AdamW" and ds["zero_force_ds_cpu_optimizer"]
                used.add("CPUAdamBuilder")
    assert used == {"CPUAdamBuilder"}  # the GPU presets offload their optimizers
    text = Path("docker/Dockerfile").read_text()
    assert re.search(r"^ENV TORCH_EXTENSIONS_DIR=/app/\S+", text, re.MULTILINE)  # in the image, owned by uid 1000
    for builder in used:
        run = re.search(rf"^RUN .*\n(?:\s+.*\n)*?.*{builder}\(\)\.load\(", text, re.MULTILINE)
        assert run and text.index(run.group(0)) < text.index("ENTRYPOINT"), f"{builder} not prebuilt"


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
