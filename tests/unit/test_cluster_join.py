"""driver/join.py without a Ray head: the address's form, nothing listening, a port that is no Ray GCS, and
RAY_AUTH_MODE=token with no token are one line each (ConfigError: exit 2) before `ray.init` retries for 20 s.
Against a real token-auth head: tests/integration/test_cluster_join.py."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from rlhf_dist.config import ConfigError
from rlhf_dist.driver.join import check_join
from rlhf_dist.utils import free_ports


@pytest.fixture()
def shell(monkeypatch, tmp_path):
    """No Ray auth settings, a HOME without ~/.ray/auth_token."""
    for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return monkeypatch


@pytest.fixture()
def not_a_gcs():
    """A TCP server on loopback that accepts and hangs up: something listens, but it speaks no gRPC."""
    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
                conn.close()
            except TimeoutError:
                continue

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield f"127.0.0.1:{server.getsockname()[1]}"
    stop.set()
    thread.join(timeout=2)
    server.close()


@pytest.mark.parametrize("address", ["127.0.0.1", "head:port", "head:0", ":6379", "head:70000"])
def test_an_address_that_is_not_host_port(address, shell):
    with pytest.raises(ConfigError, match="expected HOST:PORT"):
        check_join(address)


def test_nothing_listening_is_one_line_at_once(shell):
    address = f"127.0.0.1:{free_ports(1)[0]}"
    started = time.perf_counter()
    with pytest.raises(ConfigError) as err:
        check_join(address)
    assert time.perf_counter() - started < 5
    assert f"cluster.address {address}: cannot reach a Ray head (connection refused" in str(err.value)
    assert len(str(err.value).splitlines()) == 1


def test_a_host_that_does_not_resolve(shell):
    with pytest.raises(ConfigError, match="the host name 'nosuchhost.invalid' does not resolve"):
        check_join("nosuchhost.invalid:6379")


def test_a_port_that_is_no_gcs(shell, not_a_gcs):
    with pytest.raises(ConfigError, match=r"something answers there, but not a Ray head's GCS \(gRPC UNAVAILABLE\)"):
        check_join(not_a_gcs)


def test_auth_mode_token_without_a_token_names_what_to_set(shell, not_a_gcs, tmp_path):
    shell.setenv("RAY_AUTH_MODE", "token")
    with pytest.raises(ConfigError) as err:
        check_join(not_a_gcs)
    message = str(err.value)
    assert f"RAY_AUTH_MODE=token but no token found ({tmp_path / '.ray' / 'auth_token'} is missing" in message
    assert "set RAY_AUTH_TOKEN" in message and "RAY_AUTH_TOKEN_PATH" in message
    shell.setenv("RAY_AUTH_TOKEN_PATH", str(tmp_path / "nope"))
    with pytest.raises(ConfigError, match=f"no token found \\(RAY_AUTH_TOKEN_PATH={tmp_path / 'nope'} is missing"):
        check_join(not_a_gcs)
