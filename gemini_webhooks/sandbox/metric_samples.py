"""Prometheus samples as a scenario reads them: scraped from `/metrics`, summed by labels,
and the counters that grew between two scrapes."""

from __future__ import annotations

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def scrape(url: str) -> Samples:
    """Every sample of a Prometheus endpoint, keyed by (name, sorted labels)."""
    async with (
        aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session,
        session.get(url) as response,
    ):
        text = await response.text()
    return parse(text)


def parse(text: str) -> Samples:
    """Every sample of a Prometheus exposition, keyed by (name, sorted labels)."""
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def total(samples: Samples, name: str, **labels: str) -> float:
    """Sum of the samples named `name` whose labels include `labels`."""
    return sum(
        value
        for (sample_name, sample_labels), value in samples.items()
        if sample_name == name and all((k, v) in sample_labels for k, v in labels.items())
    )


def moved(before: Samples, after: Samples, prefix: str) -> list[tuple[str, float]]:
    """The counters under `prefix` that grew, with their growth, largest first."""
    grown: list[tuple[str, float]] = []
    for key, value in after.items():
        name, labels = key
        if not name.startswith(prefix) or not name.endswith("_total"):
            continue
        delta = value - before.get(key, 0.0)
        if delta > 0:
            label_text = ",".join(f"{k}={v}" for k, v in labels)
            grown.append((f"{name}{{{label_text}}}", delta))
    return sorted(grown, key=lambda item: (-item[1], item[0]))
