"""Fixtures of the security and reliability tests: the service fixtures (real app, real uvicorn, the
committed zoo), plus a slow model and helpers that read a process's RSS, descriptors and threads."""

from __future__ import annotations

import contextlib
import socket
from pathlib import Path

import numpy as np
from onnx import helper, numpy_helper

from service.core.registry import ModelEntry, Registry
from tests.artifacts import classifier_bytes
from tests.live import Server
from tests.service.conftest import (  # noqa: F401  (fixtures, re-exported for this directory)
    Zoo,
    anyio_backend,
    client_for,
    fashion,
    serve,
    source_zoo,
    zoo,
)


def smallest(registry: Registry, *, exclude: tuple[str, ...] = ()) -> ModelEntry:
    pool = [
        m
        for m in registry.models
        if m.name not in exclude and m.built and m.weights.kind != "random" and m.dataset == "fashion-mnist"
    ]
    return min(pool, key=lambda m: m.artifact.bytes or 0)


def slow_conv_model(entry: ModelEntry, *, channels: int = 64, layers: int = 4) -> bytes:
    """A real ONNX graph with the entry's input and output shapes whose cost is convolutions at full
    28x28 resolution (milliseconds per image on one thread), so that inference, not HTTP, is the
    bottleneck of an overload test. The weights are fixed pseudo-random numbers."""
    rng = np.random.default_rng(0)
    c_in = int(entry.input.shape[1])
    nodes, inits = [], []
    prev, prev_c = entry.input.name, c_in
    for i in range(layers):
        w = (rng.standard_normal((channels, prev_c, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        prev, prev_c = f"r{i}", channels
    fc = (rng.standard_normal((channels, entry.num_classes)) * 0.05).astype(np.float32)
    inits.append(numpy_helper.from_array(fc, "fc"))
    nodes.append(helper.make_node("GlobalAveragePool", [prev], ["pooled"]))
    nodes.append(helper.make_node("Flatten", ["pooled"], ["flat"]))
    nodes.append(helper.make_node("MatMul", ["flat", "fc"], ["logits"]))
    return classifier_bytes(entry, nodes, inits, "slow")


def rss_bytes(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def children(pid: int) -> list[int]:
    """The processes `pid` started (a service's fronts and decoding workers), from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:  # fields[1]: the parent
            found.append(int(stat.parent.name))
    return found


def server_rss(server: Server) -> int:
    """Resident set size of the service and every process it started."""
    total = 0
    for pid in [server.process.pid, *children(server.process.pid)]:
        with contextlib.suppress(OSError, AssertionError):  # gone meanwhile
            total += rss_bytes(pid)
    return total


def open_fds(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/fd").iterdir()))


def threads_of(pid: int) -> int:
    return len(list(Path(f"/proc/{pid}/task").iterdir()))


def address(server: Server) -> tuple[str, int]:
    host, port = server.url.removeprefix("http://").split(":")
    return host, int(port)


def raw_exchange(
    server: Server, head: bytes, chunks: list[bytes] | None = None, *, timeout: float = 10
) -> bytes:
    """Send a hand-written request (stopping when the server closes) and read the response head."""
    with socket.create_connection(address(server), timeout=timeout) as sock:
        sock.sendall(head)
        for chunk in chunks or []:
            try:
                sock.sendall(chunk)
            except OSError:
                break  # answered and closed: the rest was never read
        data = b""
        while b"\r\n\r\n" not in data:
            try:
                part = sock.recv(65536)
            except ConnectionResetError:
                break
            if not part:
                break
            data += part
        return data
