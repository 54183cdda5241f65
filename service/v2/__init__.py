"""The Open Inference Protocol (KServe V2 / Triton HTTP) under `/v2`."""
