"""Prometheus exposition (SPEC §8): the families every part hands over, read at scrape time.

Nothing here knows the parts: the service passes one `collect` callable that yields their
families (each part's own `collect()`), and this module adds the build information.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from internal_dns import __version__

Collect = Callable[[], Iterable[Metric]]


class PartsCollector(Collector):
    def __init__(self, collect: Collect):
        self._collect = collect

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily("internal_dns_build_info", "Version of the running server.", labels=["version"])
        info.add_metric([__version__], 1)
        yield info
        yield from self._collect()


def registry_for(collect: Collect) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(PartsCollector(collect))
    return registry
