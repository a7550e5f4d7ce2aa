"""This node's address and a free port, with the standard library only.

A worker group runs `node_address` as a Ray task in rank 0's bundle to learn MASTER_ADDR and
MASTER_PORT before its workers start. Ray imports a task's module in the process that runs it,
so keeping this module free of torch (which `verl.single_controller.base` pulls in) saves that
process ~3 s of imports on every worker group start.
"""

from __future__ import annotations

import socket


def get_node_ip() -> str:
    """The IP address other nodes can reach this one at (falls back to 127.0.0.1).

    Connecting a UDP socket sends no packet; it only asks the kernel which local address
    routes outwards.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("10.254.254.254", 1))
            return sock.getsockname()[0]
        except OSError:
            return "127.0.0.1"


def get_free_port() -> int:
    """A TCP port that is free right now (the OS picks it; it may be taken again later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("", 0))
        return sock.getsockname()[1]


def node_address() -> tuple[str, int]:
    """(this node's IP, a free port): run where the process-group store will live."""
    return get_node_ip(), get_free_port()
