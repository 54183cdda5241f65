"""Where inference runs: ONNX Runtime sessions, their threads, the CPUs the process may use, the host's
description, resident memory. Shared with export/ and bench/."""
