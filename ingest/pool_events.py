"""Pool-change events: "product P's reference pool changed", broadcast to every worker.

One message per change on the pool topic (``agpt.pool``), keyed by product so that a
compacted topic keeps the latest event of each product. The value is JSON::

    {"product": "textile", "action": "changed", "pool_version": 42,
     "at": "2026-01-01T00:00:00+00:00"}

``pool_version`` increases with every change of the product's pool (see
:func:`inference.pool.pool_version`); a worker whose references are at least that recent
ignores the event. Unlike frames, every worker must read every event, so workers read the
topic with the transport's broadcast consumer (``Transport.broadcast_consumer``) rather than
as members of the workers' group. A pure message schema, like :mod:`ingest.envelope`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from ingest.transport.base import Producer

POOL_ACTIONS = frozenset({"changed"})


class PoolEventError(ValueError):
    """A pool event that cannot be decoded; ``field_name`` names the offending field."""

    def __init__(self, message: str, *, field_name: str | None = None) -> None:
        super().__init__(message)
        self.field_name = field_name


@dataclass(frozen=True)
class PoolEvent:
    """The reference pool of one product changed.

    Attributes:
        product: Product whose pool changed; also the message key.
        pool_version: The pool's version after the change (monotonic per product).
        at: When the change was committed (timezone-aware).
        action: Always ``"changed"``: workers reload the whole pool of the product.
    """

    product: str
    pool_version: int
    at: datetime
    action: Literal["changed"] = "changed"

    def __post_init__(self) -> None:
        if not isinstance(self.product, str) or not self.product:
            msg = f"pool event field 'product' must be a non-empty string, got {self.product!r}"
            raise PoolEventError(msg, field_name="product")
        if self.action not in POOL_ACTIONS:
            msg = (f"pool event field 'action' must be one of {sorted(POOL_ACTIONS)}, "
                   f"got {self.action!r}")
            raise PoolEventError(msg, field_name="action")
        version = self.pool_version
        if isinstance(version, bool) or not isinstance(version, int) or version < 0:
            msg = f"pool event field 'pool_version' must be an integer >= 0, got {version!r}"
            raise PoolEventError(msg, field_name="pool_version")
        if not isinstance(self.at, datetime) or self.at.tzinfo is None:
            msg = f"pool event field 'at' must be a timezone-aware datetime, got {self.at!r}"
            raise PoolEventError(msg, field_name="at")

    @property
    def key(self) -> bytes:
        """Message key: the product (compaction keeps the latest event per product)."""
        return self.product.encode()

    def encode(self) -> bytes:
        """Serialise to the JSON message value."""
        return json.dumps({
            "product": self.product,
            "action": self.action,
            "pool_version": self.pool_version,
            "at": self.at.isoformat(),
        }).encode()

    @classmethod
    def decode(cls, value: bytes) -> PoolEvent:
        """Parse a message value.

        Raises:
            PoolEventError: Not JSON, not an object, or a missing or invalid field (named).
        """
        try:
            data: Any = json.loads(value)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            msg = f"pool event is not JSON: {exc}"
            raise PoolEventError(msg) from exc
        if not isinstance(data, dict):
            msg = f"pool event must be a JSON object, got {type(data).__name__}"
            raise PoolEventError(msg)
        for name in ("product", "action", "pool_version", "at"):
            if name not in data:
                msg = f"pool event field {name!r} is missing"
                raise PoolEventError(msg, field_name=name)
        at = data["at"]
        try:
            parsed_at = datetime.fromisoformat(at) if isinstance(at, str) else None
        except ValueError:
            parsed_at = None
        if parsed_at is None:
            msg = f"pool event field 'at' must be an ISO-8601 timestamp, got {at!r}"
            raise PoolEventError(msg, field_name="at")
        return cls(product=data["product"], action=data["action"],
                   pool_version=data["pool_version"], at=parsed_at)


def publish_pool_change(*, producer: Producer, topic: str, product: str,
                        version: int) -> PoolEvent:
    """Tell every worker that ``product``'s pool changed; blocks until acknowledged.

    Call it after the pool change is committed in the database: a worker reloading on the
    event must find the new pool.

    Args:
        producer: Transport producer.
        topic: The pool topic.
        product: Product whose pool changed.
        version: The pool's version after the change.

    Returns:
        The published event.

    Raises:
        TransportError: The broker did not acknowledge the event.
    """
    event = PoolEvent(product=product, pool_version=version, at=datetime.now(UTC))
    producer.send(topic, key=event.key, value=event.encode())
    producer.flush()
    return event
