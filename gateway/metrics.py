"""The gateway's Prometheus metrics, in a registry of its own (one per application, so
that several gateways can run in one process, as the tests do).

Every label value comes from a bounded set: partner ids from the configuration (plus
``local``), the message kinds and priorities of the envelope format, the stages and
directions below, and stable error codes. No message id, desk, officer or free text is
ever a label value.

The registry also carries the standard ``process_*`` series (resident memory, CPU
seconds, open files, start time; read from /proc, so Linux only) that the default
registry of prometheus_client would have had.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector

#: Where a message stands, measured from the moment this gateway accepted it:
#: ``receipt`` the partner's signed receipt (outbound only), ``delivered`` in the desk
#: inbox (for outbound messages: the partner's receipt says it delivered), ``read`` the
#: first signed read acknowledgement, ``reply`` the first reply accepted.
STAGES = ("receipt", "delivered", "read", "reply")
#: ``outbound``: sent by our officers to a partner's desk; ``inbound``: came from a
#: partner for one of our desks; ``local``: desk to desk on this gateway.
DIRECTIONS = ("outbound", "inbound", "local")
LOCAL = "local"  # the partner label of local messages

#: Seconds to days: a flash alert is read in minutes, an MLA request answered in weeks.
RESPONSE_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200,
    14_400, 28_800, 86_400, 172_800, 604_800, 1_209_600, 2_592_000,
)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        ProcessCollector(registry=r)
        self.info = Gauge("fpg_gateway_info", "This gateway's id and software version "
                          "(always 1)", ["gateway", "version"], registry=r)
        self.response = Histogram(
            "fpg_response_seconds", "Time from this gateway's accept of a message to each "
            "later stage (receipt, delivered, read, reply)",
            ["direction", "partner", "kind", "priority", "stage"],
            buckets=RESPONSE_BUCKETS, registry=r)
        self.messages = Counter(
            "fpg_messages", "Messages by direction, partner, kind, priority and outcome "
            "(accepted, delivered, relayed, refused, expired, read, replied)",
            ["direction", "partner", "kind", "priority", "outcome"], registry=r)
        self.rejected = Counter(
            "fpg_rejected_requests", "Requests refused, by stable error code",
            ["reason"], registry=r)
        self.refused_connections = Counter(
            "fpg_refused_connections", "Connections closed unread as soon as they were "
            "accepted, by the cap they met (total, per_address)", ["reason"], registry=r)
        self.retries = Counter(
            "fpg_relay_retries", "Relay attempts to a partner that failed and will be "
            "retried", ["partner"], registry=r)
        self.refused = Counter(
            "fpg_partner_refused_messages", "Messages a partner refused for good (per item "
            "in its receipts, or a one-message batch answered 4xx), returned to their "
            "sender with a non-delivery notice, by partner and reason", ["partner", "reason"],
            registry=r)
        self.breaches = Counter(
            "fpg_service_level_breaches", "Messages that missed a service level, by "
            "direction, priority and stage", ["direction", "priority", "stage"], registry=r)
        self.outbox_depth = Gauge(
            "fpg_outbox_depth", "Messages queued for a partner", ["partner"], registry=r)
        self.outbox_oldest = Gauge(
            "fpg_outbox_oldest_age_seconds", "Age of the oldest message queued for a "
            "partner (0 when the queue is empty)", ["partner"], registry=r)
        self.reads_queued = Gauge(
            "fpg_read_acks_queued", "Read acknowledgements waiting to travel back to a "
            "partner", ["partner"], registry=r)
        self.partner_up = Gauge(
            "fpg_partner_up", "1 if the last contact with the partner succeeded, 0 if it "
            "failed (absent until first contact)", ["partner"], registry=r)
        self.ledger_size = Gauge(
            "fpg_ledger_size", "Entries in this gateway's ledger", registry=r)
        self.checkpoint_age = Gauge(
            "fpg_ledger_checkpoint_age_seconds", "Age of the newest signed ledger "
            "checkpoint", registry=r)
        self.uncovered = Gauge(
            "fpg_ledger_unchecked_entries", "Ledger entries not yet covered by a signed "
            "checkpoint", registry=r)
        self.cases = Gauge(
            "fpg_cases", "Requests (case threads) by partner (local: both desks here) and "
            "the state their last status moved them to (submitted: none yet)",
            ["partner", "state"], registry=r)
        self.cases_overdue = Gauge(
            "fpg_cases_overdue", "Open requests past their due day, by partner",
            ["partner"], registry=r)
        self.case_deadlines = Counter(
            "fpg_case_deadline_notices", "Reminders (the due day nears) and escalations "
            "(it passed) told about requests, by partner and kind", ["partner", "what"],
            registry=r)
        self.witness_alarms = Counter(
            "fpg_witness_alarms", "Partner ledger checkpoints refused as inconsistent with "
            "the last one seen (shrank, forked, bad signature)", ["partner", "reason"],
            registry=r)

    def value(self, name: str, **labels: str) -> float:
        """A sample's current value (0 if never set): for tests and operator summaries."""
        found = self.registry.get_sample_value(name, labels)
        return found if found is not None else 0.0

    def names(self) -> set[str]:
        """Every sample name this registry exports (``fpg_messages_total``,
        ``fpg_response_seconds_bucket``...): what a PromQL query may name."""
        suffixes = {"counter": ("_total", "_created"),
                    "histogram": ("_bucket", "_count", "_sum", "_created"),
                    "gauge": ("",)}
        return {family.name + suffix for family in self.registry.collect()
                for suffix in suffixes[family.type]}
