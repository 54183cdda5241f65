"""Prometheus view of rollouts: the version each model serves and in which role, requests per version,
the shadow's comparisons (images compared and agreed, requests shed and failed), and versions that failed
to roll out; read from the manager at each scrape."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from service.models.manager import ModelManager


class RolloutCollector:
    def __init__(self, manager: ModelManager) -> None:
        self._manager = manager

    def collect(self) -> Iterator[Metric]:
        m = self._manager
        r = m.rollouts
        serving = GaugeMetricFamily(
            "convzoo_model_version_serving",
            "1 for each version a model's policy serves, by role (stable, canary, shadow) and its percent.",
            labels=["model", "version", "role"],
        )
        percent = GaugeMetricFamily(
            "convzoo_model_version_percent",
            "The canary's and the shadow's share of requests, in percent.",
            labels=["model", "version", "role"],
        )
        for model, policy in sorted(m.serving_policies().items()):
            serving.add_metric([model, policy.stable, "stable"], 1)
            for role, share in (("canary", policy.canary), ("shadow", policy.shadow)):
                if share is not None:
                    serving.add_metric([model, share.version, role], 1)
                    percent.add_metric([model, share.version, role], share.percent)
        yield serving
        yield percent
        requests = CounterMetricFamily(
            "convzoo_model_version_requests",
            "Inference requests per version: routed by the policy (routed=policy) or pinned to it.",
            labels=["model", "version", "routed"],
        )
        for (model, version), n in sorted(r.served.items()):
            requests.add_metric([model, version, "policy"], n)
        for (model, version), n in sorted(r.pinned.items()):
            requests.add_metric([model, version, "pinned"], n)
        yield requests
        compared = CounterMetricFamily(
            "convzoo_shadow_images",
            "Images answered by both a primary and its shadow version.",
            labels=["model", "primary", "shadow"],
        )
        agreed = CounterMetricFamily(
            "convzoo_shadow_agreements",
            "Images whose top-1 class the shadow version and the primary agree on.",
            labels=["model", "primary", "shadow"],
        )
        delta = CounterMetricFamily(
            "convzoo_shadow_confidence_delta_abs",
            "Sum over compared images of |shadow - primary probability of the primary's top-1 class|.",
            labels=["model", "primary", "shadow"],
        )
        for (model, primary, shadow), c in sorted(r.pairs.items()):
            compared.add_metric([model, primary, shadow], c.images)
            agreed.add_metric([model, primary, shadow], c.agreements)
            delta.add_metric([model, primary, shadow], c.confidence_delta_abs_sum)
        yield compared
        yield agreed
        yield delta
        for name, doc, counts in (
            (
                "convzoo_shadow_shed",
                "Requests not copied to the shadow: it had a batch waiting, or was not loaded.",
                r.shed,
            ),
            ("convzoo_shadow_failed", "Copies the shadow version failed to answer.", r.failed),
        ):
            family = CounterMetricFamily(name, doc, labels=["model", "version"])
            for (model, version), n in sorted(counts.items()):
                family.add_metric([model, version], n)
            yield family
        failed = GaugeMetricFamily(
            "convzoo_model_version_rollout_failed",
            "1 for a version that failed to roll out at the last reload (its model serves the one before).",
            labels=["model", "version"],
        )
        for model, errors in sorted(m.rollout_errors.items()):
            for version in sorted(errors):
                failed.add_metric([model, version], 1)
        yield failed
