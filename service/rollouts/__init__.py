"""Model versions: names and the serving policy's choice, a rollout's figures (canary share, the shadow's
comparisons) and their Prometheus view."""
