"""Gloo and NCCL's bootstrap use the interface of the rank's cluster address (backends/train/dist.py), not the
hostname's (a loopback address on Debian/Ubuntu, which other nodes cannot reach); a value set by the user wins."""

from __future__ import annotations

from rlhf_dist.backends.train.dist import interface_of, use_interface_of


def test_the_interface_holding_an_address_is_named():
    assert interface_of("127.0.0.1") == "lo"
    assert interface_of("198.51.100.77") is None  # TEST-NET-2: on no interface here


def test_the_rank_address_interface_is_set_unless_the_user_chose_one():
    env: dict[str, str] = {}
    use_interface_of("127.0.0.1", env)
    assert env == {"GLOO_SOCKET_IFNAME": "lo", "NCCL_SOCKET_IFNAME": "lo"}
    chosen = {"GLOO_SOCKET_IFNAME": "eth7"}
    use_interface_of("127.0.0.1", chosen)
    assert chosen == {"GLOO_SOCKET_IFNAME": "eth7", "NCCL_SOCKET_IFNAME": "lo"}
    nothing: dict[str, str] = {}
    use_interface_of("198.51.100.77", nothing)
    assert nothing == {}
