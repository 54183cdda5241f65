"""The models: the manager that composes the lifecycle's parts (artifact loads, per-model state and
footprints, loading, the memory budget's eviction policy, readiness, calibration), the batchers, and the
live latencies (docs/model-lifecycle.md)."""
