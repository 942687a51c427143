"""The gateway's Prometheus metrics, in a registry of its own (one per application, so
that several gateways can run in one process, as the tests do)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.witness_alarms = Counter(
            "fpg_witness_alarms", "Partner ledger checkpoints refused as inconsistent with "
            "the last one seen (shrank, forked, bad signature)", ["partner", "reason"],
            registry=self.registry)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if never set): for tests and operator summaries."""
        found = self.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0
