"""A network namespace of the test's own, joined to the host by a veth pair.

The aggregator routes ``metrics.k8s.io`` to an EndpointSlice address, and EndpointSlice
validation refuses loopback (and link-local) addresses, so the test metrics server cannot
listen on 127.0.0.1. It listens on the namespace's end of a veth instead: an address that
exists only inside this machine, made and removed by the test.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass


def subnet_for(pid: int) -> tuple[str, str]:
    """(host, peer) addresses of a /30 in 10.213.0.0/16 chosen by ``pid``: two harnesses
    running at once on one machine (several worktrees) must not share an address, or the
    host routes one API server's metrics.k8s.io traffic to the other's test server."""
    base = (pid % 16384) * 4
    prefix = f"10.213.{base // 256}."
    return prefix + str(base % 256 + 1), prefix + str(base % 256 + 2)


@dataclass(frozen=True)
class Netns:
    name: str
    host_ip: str
    peer_ip: str

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=30)


@contextlib.contextmanager
def veth_namespace(host_ip: str | None = None, peer_ip: str | None = None) -> Iterator[Netns]:
    tag = f"mc{os.getpid() % 100000}"
    if host_ip is None or peer_ip is None:
        host_ip, peer_ip = subnet_for(os.getpid())
    name, host, peer = f"{tag}-ns", f"{tag}h", f"{tag}p"
    _ip("netns", "add", name)
    try:
        _ip("link", "add", host, "type", "veth", "peer", "name", peer)
        _ip("link", "set", peer, "netns", name)
        _ip("addr", "add", f"{host_ip}/30", "dev", host)
        _ip("link", "set", host, "up")
        _ip("netns", "exec", name, "ip", "addr", "add", f"{peer_ip}/30", "dev", peer)
        _ip("netns", "exec", name, "ip", "link", "set", peer, "up")
        _ip("netns", "exec", name, "ip", "link", "set", "lo", "up")
        yield Netns(name, host_ip, peer_ip)
    finally:
        subprocess.run(["ip", "link", "del", host], capture_output=True, timeout=30)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
