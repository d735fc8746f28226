"""Default topic names and the message size every producer stays under.

The settings (``agpt/settings.py``) take their defaults from here; the worker, the pool and
the publisher fall back to the same values when built without settings (tests, benches).
"""

FRAMES_TOPIC = "agpt.frames"
VERDICTS_TOPIC = "agpt.verdicts"
DLQ_TOPIC = "agpt.frames.dlq"
POOL_TOPIC = "agpt.pool"
CONSUMER_GROUP = "agpt-workers"

# Kafka's default message.max.bytes is ~1 MiB: a message value (a frame envelope with its
# image inside, a dead letter's copy of a message) stays below this, so headers fit as well.
MESSAGE_VALUE_LIMIT = 900 * 1024
