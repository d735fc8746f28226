"""`agpt worker`: one consumer-group member, until SIGTERM/SIGINT."""

from __future__ import annotations

import argparse
import logging

from agpt.settings import Settings, SettingsError
from agpt.signals import stop_on_signals

log = logging.getLogger("agpt.worker")


def add_worker_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `agpt worker` (registered by the CLI)."""
    parser.add_argument("--metrics-port", type=int, default=9400)


def run_worker(settings: Settings, args: argparse.Namespace) -> int:
    """Consume frames until SIGTERM/SIGINT; exit code 0.

    On the signal the batch in hand is finished and committed, then the consumer leaves the
    group and the producer is flushed and closed. The database must be at the newest schema
    revision (``agpt db upgrade``); the worker never migrates a shared database.

    Raises:
        SettingsError: No broker is configured.
        SchemaNotCurrentError: The database is not migrated.
    """
    from prometheus_client import CollectorRegistry

    from agpt import wiring
    from inference.health import HealthServer, Liveness, Readiness
    from inference.metrics import WorkerMetrics
    from inference.pool import load_all
    from inference.pool_updates import open_pool_updates
    from inference.worker import InferenceWorker

    if not settings.kafka_bootstrap:
        msg = ("agpt worker needs a broker: set AGPT_KAFKA_BOOTSTRAP or --kafka-bootstrap "
               "(`agpt demo` runs a worker in process)")
        raise SettingsError(msg)
    # Before the model loads (a minute): a database that is not ready, or a blob store that
    # cannot be opened, stops the worker now.
    session_factory = wiring.database(settings)
    blobs = wiring.blob_store(settings)
    wiring.configure_logging()
    registry = CollectorRegistry()
    readiness = Readiness("model", "consumer")
    # Liveness answers while the model loads; readiness waits for model, pool and consumer.
    liveness = Liveness(bound_s=settings.stall_timeout_s)
    health = (HealthServer(registry=registry, readiness=readiness, port=args.metrics_port,
                           host=settings.health_host, liveness=liveness).start()
              if args.metrics_port else None)
    metrics = WorkerMetrics(registry, readiness=readiness)
    try:
        with stop_on_signals(log, "finishing the batch in hand, then stopping") as stop:
            wiring.configure_torch(settings)
            detector = wiring.detector(settings)
            load_all(detector=detector, session_factory=session_factory)
            readiness.set("model", True)
            transport = wiring.transport(settings)
            producer = transport.producer()
            try:
                consumer = transport.consumer([settings.frames_topic],
                                              group_id=settings.consumer_group)
                # Every worker reads every pool change (not the shared group) and reloads.
                pool_updates = open_pool_updates(transport, topic=settings.pool_topic,
                                                 metrics=metrics)
                try:
                    worker = InferenceWorker(consumer=consumer, producer=producer,
                                             session_factory=session_factory,
                                             detector=detector,
                                             config=wiring.worker_config(settings),
                                             metrics=metrics,
                                             readiness=readiness, pool_updates=pool_updates,
                                             blob_store=blobs, liveness=liveness)
                    worker.run(stop)
                finally:
                    # Leave the group now, not after the session timeout: partitions move.
                    consumer.close()
                    pool_updates.close()
            finally:
                producer.close()
    finally:
        if health is not None:
            health.stop()
    log.info("worker stopped")
    return 0
