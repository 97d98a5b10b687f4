"""Joining a running Ray cluster: what is wrong, in one line, before `ray.init(address=...)`.

    check_join("10.0.0.5:6379")      # raises ConfigError (exit 2) naming what to set; returns None when all is well

Left to itself, `ray.init` against an address that does not answer, or against a head started with token
authentication (launch/start_head.sh) from a shell without the token, retries for about 20 s and ends in a
long traceback. Two quick probes say why first:

1. a TCP connection to HOST:PORT (a few seconds at most): nothing there, a name that does not resolve;
2. one gRPC call to the head's GCS, with the token this process would send (Ray sends one only when
   RAY_AUTH_MODE=token; an explicit address never turns token auth on by itself): UNAUTHENTICATED means the
   head wants a token, and the message says which of RAY_AUTH_MODE / RAY_AUTH_TOKEN(_PATH) to set; a port
   that answers but is no GCS (the dashboard's, the Ray Client's) is named as such.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from rlhf_dist.config import ConfigError

PROBE_TIMEOUT_S = 3.0
# a cheap GCS method behind the head's token check (an empty request: OK from a GCS with a good or no token)
PROBE_METHOD = "/ray.rpc.InternalKVGcsService/InternalKVGet"
# what a port that is no GCS answers: the Ray Client server (UNIMPLEMENTED), the dashboard's HTTP (UNAVAILABLE)
NOT_A_GCS = frozenset({"UNIMPLEMENTED", "UNAVAILABLE", "INTERNAL", "UNKNOWN"})
TOKEN_HELP = ("RAY_AUTH_TOKEN to the head's token, or RAY_AUTH_TOKEN_PATH to a file holding it (or copy it to "
              "~/.ray/auth_token; `ray get-auth-token` on the head prints it)")


def _host_port(address: str) -> tuple[str, int]:
    """'HOST:PORT' (or 'ray://HOST:PORT', '[v6]:PORT') -> (host, port); anything else is a config error."""
    rest = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError([f"cluster.address '{address}': expected HOST:PORT (the head's GCS address, e.g. "
                           "10.0.0.5:6379)"])
    return host.strip("[]"), int(port)


def _reach(address: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=PROBE_TIMEOUT_S).close()
        return
    except socket.gaierror:
        why = f"the host name '{host}' does not resolve"
    except ConnectionRefusedError:
        why = "connection refused: nothing listens on that port"
    except TimeoutError:
        why = f"no answer within {PROBE_TIMEOUT_S:g} s"
    except OSError as err:
        why = err.strerror or str(err)
    raise ConfigError([f"cluster.address {address}: cannot reach a Ray head ({why}); check the address (the "
                       "head's GCS port, `ray start --head --port`, 6379 by default) and that the head is running"])


def _local_token() -> tuple[str | None, str]:
    """The token Ray would read (RAY_AUTH_TOKEN, then RAY_AUTH_TOKEN_PATH, then ~/.ray/auth_token) and where from."""
    if os.environ.get("RAY_AUTH_TOKEN", "").strip():
        return os.environ["RAY_AUTH_TOKEN"].strip(), "RAY_AUTH_TOKEN"
    path_env = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(path_env).expanduser() if path_env else Path.home() / ".ray" / "auth_token"
    where = f"RAY_AUTH_TOKEN_PATH={path_env}" if path_env else str(path)
    if path.is_file() and path.read_text().strip():
        return path.read_text().strip(), where
    return None, where


def _probe_status(host: str, port: int, token: str | None) -> str:
    """The gRPC status name of one GCS call ('OK', 'UNAUTHENTICATED', ...)."""
    import grpc

    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    metadata = [("authorization", f"Bearer {token}")] if token else None
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(PROBE_METHOD, request_serializer=None, response_deserializer=None)
        try:
            call(b"", timeout=PROBE_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as err:
            return err.code().name
    return "OK"


def check_join(address: str) -> None:
    """One line (ConfigError, exit 2) when `address` cannot be joined as this shell is set up; else nothing.
    Inside a Ray job (the job's own cluster, address and token set up by Ray) there is nothing to check."""
    if address == "auto" or os.environ.get("RAY_JOB_CONFIG_JSON_ENV_VAR"):
        return
    host, port = _host_port(address)
    _reach(address, host, port)
    if address.startswith("ray://"):
        return  # a Ray Client server: its own protocol, ray.init reports its errors
    mode = os.environ.get("RAY_AUTH_MODE", "").strip().lower()
    token, where = _local_token()
    if mode == "token" and token is None:
        raise ConfigError([f"cluster.address {address}: RAY_AUTH_MODE=token but no token found ({where} is "
                           f"missing or empty): set {TOKEN_HELP}"])
    status = _probe_status(host, port, token if mode == "token" else None)
    if status in NOT_A_GCS:
        raise ConfigError([f"cluster.address {address}: something answers there, but not a Ray head's GCS (gRPC "
                           f"{status}): give the head's GCS port (`ray start --head --port`, 6379 by default), not "
                           "the dashboard's (8265) or the Ray Client server's (10001)"])
    if status != "UNAUTHENTICATED":
        return  # answered; a slow head (DEADLINE_EXCEEDED) is left to ray.init's own retries
    if mode == "token":
        raise ConfigError([f"cluster.address {address}: the Ray head refused the token from {where}: set "
                           f"{TOKEN_HELP}"])
    unset = "unset" if not mode else f"'{mode}'"
    also = (f" (the token in {where} is sent only then)" if token else f", and {TOKEN_HELP}")
    raise ConfigError([f"cluster.address {address}: the Ray head requires token authentication but RAY_AUTH_MODE "
                       f"is {unset} here: set RAY_AUTH_MODE=token{also}"])
