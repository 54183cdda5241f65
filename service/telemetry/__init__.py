"""What the service tells its operators: the JSON request log, Prometheus metrics, OpenTelemetry traces, and
their wiring into an app."""
