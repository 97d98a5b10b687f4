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


@pytest.fixture(scope="module")
def s3():
    """A real S3-compatible server on loopback (moto's standalone server, tests/s3_server.py), bucket "bucket";
    AWS_* env vars point this process's S3 clients at it. One per test module."""
    from tests.s3_server import s3_server

    with s3_server() as endpoint:
        yield endpoint
