"""The model lifecycle's parts, which `service.manager.ModelManager` composes: artifact checks, per-model
state and footprints, loading, the memory budget's eviction policy, readiness and calibration
(docs/model-lifecycle.md). Nothing is imported here, so that `service.models.artifacts` stays light."""
