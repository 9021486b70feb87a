"""Reading the Prometheus text the app exposes on /metrics."""

from __future__ import annotations


def metric_total(exposition: str, name: str, **labels: str) -> float:
    """Sum the samples called `name` whose labels include `labels`, in Prometheus text."""
    from prometheus_client.parser import text_string_to_metric_families

    total = 0.0
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                total += sample.value
    return total
