"""A private local Ray cluster shared by the integration tests of one session."""

from __future__ import annotations

import tempfile

import pytest


@pytest.fixture(scope="session")
def ray_cluster():
    import ray

    from rlhf_dist.driver.actors import start_private_ray

    # The product's starter (same runtime_env as `rlhf-dist ppo`); a short private temp dir: Ray's socket
    # paths must stay under ~107 characters. Worker output stays in the workers' logs.
    start_private_ray(2, temp_dir=tempfile.mkdtemp(prefix="/tmp/rdt"), log_to_driver=False)
    yield
    ray.shutdown()


# The tiny preset for 4 steps, one reference actor, 32 demo rows: the run the fault, resume and multi-node tests
# interrupt. Their reward functions (tests/integration/faults.py, rewards.py) score as the preset's rule does.
FOUR_STEPS = ["tracking.tensorboard=false", "tracking.progress=false", "data.demo_size=32",
              "cluster.reference.num_actors=1", "ppo.steps=4"]


@pytest.fixture(scope="session")
def four_step_history(ray_cluster, tmp_path_factory) -> list[dict]:
    """That run uninterrupted, on the session's one-node cluster: what every interrupted run must end with.
    Checkpoints, placement and restarts leave the metrics unchanged, so one run serves every module."""
    from rlhf_dist.config import load_config
    from rlhf_dist.stages.ppo import run_ppo_stage

    run = tmp_path_factory.mktemp("four-steps")
    return run_ppo_stage(load_config("configs/tiny.yaml", [f"run.output_dir={run}", *FOUR_STEPS])).history


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on loopback (moto's standalone server, tests/s3_server.py), bucket "bucket";
    AWS_* env vars point this process's S3 clients at it. One per test module."""
    from tests.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint
