"""The total-queue checker, in the spirit of Jepsen's ``total-queue``.

The driver knows every message it ever tried to send (id and recipient desk) and which of
them a gateway acknowledged (answered 201 accepted or 200 duplicate). After the run every
inbox row of every gateway is read. Then:

* **lost**: acknowledged, but in no inbox of its recipient desk;
* **duplicated**: in inboxes more than once (two rows, on one gateway or on two);
* **unexpected**: in an inbox although the driver never sent it, or in the inbox of a
  desk it was not addressed to;
* **delivered**: sent by the driver and in its recipient desk's inbox (a message whose
  acknowledgement was lost on the way, i.e. never acknowledged, may be delivered: that
  is allowed, Jepsen's "recovered").
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass


@dataclass(frozen=True)
class Verdict:
    attempted: int  # messages the driver tried to send (acknowledged or not)
    acknowledged: int
    delivered: int
    lost: tuple[str, ...]
    duplicated: tuple[str, ...]
    unexpected: tuple[str, ...]
    recovered: int  # delivered without ever being acknowledged

    @property
    def ok(self) -> bool:
        return not (self.lost or self.duplicated or self.unexpected)

    def counts(self) -> str:
        return (f"acknowledged={self.acknowledged} delivered={self.delivered} "
                f"lost={len(self.lost)} duplicated={len(self.duplicated)} "
                f"unexpected={len(self.unexpected)}")

    def examples(self, n: int = 5) -> str:
        parts = [f"{name}: {', '.join(ids[:n])}{' ...' if len(ids) > n else ''}"
                 for name, ids in (("lost", self.lost), ("duplicated", self.duplicated),
                                   ("unexpected", self.unexpected)) if ids]
        return "; ".join(parts)


def check(sent: Mapping[str, str], acknowledged: Iterable[str],
          inboxes: Iterable[tuple[str, str]]) -> Verdict:
    """``sent``: every message id the driver tried to send -> its recipient desk address;
    ``acknowledged``: the ids a gateway acknowledged; ``inboxes``: (desk address, message
    id) of every inbox row of every gateway."""
    acked = set(acknowledged)
    assert acked <= set(sent), "acknowledged ids the driver never sent"
    rows = list(inboxes)
    copies = Counter(mid for _, mid in rows)
    duplicated = sorted(mid for mid, n in copies.items() if n > 1)
    unexpected = sorted({mid for desk, mid in rows if sent.get(mid) != desk})
    delivered = {mid for desk, mid in rows if sent.get(mid) == desk}
    lost = sorted(acked - delivered)
    return Verdict(len(sent), len(acked), len(delivered), tuple(lost), tuple(duplicated),
                   tuple(unexpected), len(delivered - acked))
