"""What the models see: per-answer signals, references per model version, drift over a sliding window,
payload sampling (docs/monitoring.md)."""
