"""The embedded SQLite store (:class:`SqliteStore`), with group commit.

:mod:`.engine` holds the group-commit engine (connections, committer, transactions, the
tree's right edge); the queries sit beside it, one module per consumer, each a subclass
of the engine that :class:`SqliteStore` combines:

* :mod:`.messages`: accepts and read acknowledgements, messages, inboxes (officers'
  channel, delivery, federation receiver);
* :mod:`.outbox`: outbox batches, receipts, expiries, queue depths (federation sender);
* :mod:`.partners`: key history, directory, witnessed checkpoint, retry state of partners;
* :mod:`.ledger`: ledger appends, rows, subtree hashes, checkpoints;
* :mod:`.levels`: stage times, overdue messages, breaches (service levels);
* :mod:`.desks`: desks, officers, enrollment codes;
* :mod:`.cases`: requests (case threads), their deadlines and counts;
* :mod:`.exchange`: what was exchanged with a partner in a window (reconciliation).
"""

from gateway.store.sqlite.cases import CaseQueries
from gateway.store.sqlite.desks import DeskQueries
from gateway.store.sqlite.engine import WAL_CHECKPOINT_SECONDS, StoreEngine, _write_batch
from gateway.store.sqlite.exchange import ExchangeQueries
from gateway.store.sqlite.ledger import LedgerQueries
from gateway.store.sqlite.levels import ServiceLevelQueries
from gateway.store.sqlite.messages import MessageQueries
from gateway.store.sqlite.outbox import OutboxQueries
from gateway.store.sqlite.partners import PartnerQueries

__all__ = ["WAL_CHECKPOINT_SECONDS", "SqliteStore", "StoreEngine", "_write_batch"]


class SqliteStore(MessageQueries, OutboxQueries, PartnerQueries, LedgerQueries,
                  ServiceLevelQueries, DeskQueries, CaseQueries, ExchangeQueries):
    """The :class:`gateway.store.Store` on one SQLite file."""
