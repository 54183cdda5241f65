"""A model's calibration on this host: the figures the service measured (service/compute/runtime.py
measures them; a front reads them back from the service's snapshot). No ONNX Runtime here: fronts import it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Calibration:
    """Measured on this host by the service itself; never estimated."""

    p50_ms: float
    p99_ms: float
    throughput_ips: float
    batch_size: int
    samples: int
    provider: str
