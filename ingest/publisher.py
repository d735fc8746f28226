"""Sends frame envelopes to the frames topic: claim check, key = camera id, acknowledged flush.

The producer comes from the transport (on Kafka: idempotent, ``acks=all``, compressed; see
``ingest.transport.kafka``). Every frame is keyed by its camera id, so one camera's frames
stay in one partition, in order.
"""

from __future__ import annotations

from collections.abc import Iterable

from ingest.blobstore import BlobStore, claim_check
from ingest.envelope import FrameEnvelope
from ingest.topics import MESSAGE_VALUE_LIMIT
from ingest.transport.base import Producer


class FrameTooLargeError(ValueError):
    """An image above the claim-check limit with no blob store to put it in."""


class FramePublisher:
    """Publishes frames on one topic, moving large images to a blob store first.

    Args:
        producer: Any transport producer.
        topic: The frames topic.
        blob_store: Where images above ``claim_check_bytes`` go; None refuses them.
        claim_check_bytes: Largest image sent inside the message.
    """

    def __init__(self, producer: Producer, *, topic: str, blob_store: BlobStore | None = None,
                 claim_check_bytes: int = MESSAGE_VALUE_LIMIT) -> None:
        self.producer = producer
        self.topic = topic
        self.blob_store = blob_store
        self.claim_check_bytes = claim_check_bytes
        self.sent = 0
        self.claim_checked = 0

    def prepare(self, frame: FrameEnvelope) -> FrameEnvelope:
        """The envelope as it goes on the wire (image moved out when too large).

        Raises:
            FrameTooLargeError: The image is above the limit and there is no blob store.
            BlobStoreError: The blob store could not write the image.
        """
        if frame.image is None or len(frame.image) <= self.claim_check_bytes:
            return frame
        if self.blob_store is None:
            msg = (f"frame {frame.camera_id}/{frame.frame_id}: image of {len(frame.image)} "
                   f"bytes is above the {self.claim_check_bytes}-byte claim-check limit and "
                   "no blob store is configured (set AGPT_BLOB_STORE)")
            raise FrameTooLargeError(msg)
        self.claim_checked += 1
        return claim_check(frame, self.blob_store, limit_bytes=self.claim_check_bytes)

    def send(self, frame: FrameEnvelope) -> FrameEnvelope:
        """Queue one frame (keyed by camera id); returns the envelope that was sent.

        Raises:
            TransportError: The producer could not queue the record.
        """
        wire = self.prepare(frame)
        self.producer.send(self.topic, key=wire.key, value=wire.encode())
        self.sent += 1
        return wire

    def send_all(self, frames: Iterable[FrameEnvelope], *, flush_every: int = 100) -> int:
        """Send ``frames``, flushing every ``flush_every`` and at the end; return the count."""
        count = 0
        for frame in frames:
            self.send(frame)
            count += 1
            if count % flush_every == 0:
                self.flush()
        self.flush()
        return count

    def flush(self, timeout_s: float = 30.0) -> None:
        """Block until every queued frame is acknowledged (raises TransportError if not)."""
        self.producer.flush(timeout_s=timeout_s)
