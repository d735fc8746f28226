"""`agpt ingest`: camera sources → frames topic (claim check for large images).

Imports neither torch nor the model: ingest runs on the camera PC.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import sys
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

from agpt.errors import UsageError
from agpt.settings import Settings, SettingsError
from agpt.signals import stop_on_signals
from ingest.blobstore import BlobStore, BlobStoreError, open_blob_store
from ingest.envelope import FrameEnvelope
from ingest.publisher import FramePublisher, FrameTooLargeError
from ingest.sources.files import folder_frames
from ingest.sources.pacing import paced
from ingest.sources.simulator import simulator_images
from ingest.sources.video import VideoSourceError
from ingest.transport.base import TransportError

SOURCES = ("folder", "watch", "video", "replay", "simulate")
NEEDS_PRODUCT = ("folder", "watch", "video")

log = logging.getLogger("agpt.ingest")


def add_ingest_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `agpt ingest` (registered by the CLI)."""
    parser.add_argument("location", nargs="?",
                        help="folder (folder, watch), video file or rtsp:// URL (video), "
                        "stored set (replay), image folder (simulate; default: textile line)")
    parser.add_argument("--source", choices=SOURCES, default="folder",
                        help="folder: send the folder's images once; watch: send new files "
                        "until stopped; video; replay; simulate (load test)")
    parser.add_argument("--product", help="product of the frames (replay: from the set)")
    parser.add_argument("--camera", default="cam-01", help="camera id = Kafka key")
    parser.add_argument("--rate", type=float, help="frames per second (default: unpaced)")
    parser.add_argument("--blob-store", help="overrides AGPT_BLOB_STORE")
    parser.add_argument("--claim-check-bytes", type=int, help="overrides AGPT_CLAIM_CHECK_BYTES")
    parser.add_argument("--poll-s", type=float, default=0.25, help="watch: poll period")
    parser.add_argument("--settle-s", type=float, default=0.5,
                        help="watch: a file unchanged this long is complete")
    parser.add_argument("--stride", type=int, default=1, help="video: keep every n-th frame")
    parser.add_argument("--max-fps", type=float, help="video: cap on kept frames per second")
    parser.add_argument("--frames", type=int, help="video, simulate: stop after this many")
    parser.add_argument("--split", default="test", help="replay: MVTec split")
    parser.add_argument("--shuffle-seed", type=int, help="replay: seeded random order")
    parser.add_argument("--run-id", help="replay, simulate: frame-id prefix of this run")
    parser.add_argument("--cameras", type=int, default=1, help="simulate: number of cameras")
    parser.add_argument("--defect-fraction", type=float, default=0.1,
                        help="simulate: probability of a defective frame")
    parser.add_argument("--seed", type=int, default=0, help="simulate: seed of the draws")


def frames_for(args: argparse.Namespace, stop: threading.Event) -> Iterator[FrameEnvelope]:
    """The frames of the chosen source (all but ``watch``), until exhausted or ``stop``."""
    if args.source == "folder":
        frames = folder_frames(Path(args.location), product=args.product, camera_id=args.camera)
        return _until(stop, paced(frames, args.rate))
    if args.source == "video":
        from ingest.sources.video import VideoSource

        video = VideoSource(args.location, product=args.product, camera_id=args.camera,
                            stride=args.stride, max_fps=args.max_fps, max_frames=args.frames)
        return paced(video.frames(stop), args.rate)
    if args.source == "replay":
        from ingest.sources.replay import replay, stored_set

        items = stored_set(Path(args.location), split=args.split, product=args.product)
        return _until(stop, replay(items, camera_id=args.camera, rate_hz=args.rate,
                                   shuffle_seed=args.shuffle_seed, run_id=args.run_id))
    from ingest.sources.simulator import LineSimulator

    simulator = LineSimulator(simulator_images(args.location), product=args.product or "textile",
                              cameras=args.cameras, rate_hz=args.rate,
                              defect_fraction=args.defect_fraction, frames=args.frames,
                              seed=args.seed, run_id=args.run_id)
    return simulator.stream(stop)


def _until(stop: threading.Event, frames: Iterable[FrameEnvelope]) -> Iterator[FrameEnvelope]:
    return itertools.takewhile(lambda _: not stop.is_set(), frames)


def run_ingest(settings: Settings, args: argparse.Namespace,
               stop: threading.Event | None = None) -> int:
    """Send the frames of ``args.source`` to the frames topic; exit code 0 or 1.

    Without ``stop``, SIGTERM/SIGINT stop the source; what was sent is flushed first.

    Raises:
        SettingsError: No broker is configured.
        UsageError: A missing option or location, a bad blob store, an unreachable broker.
    """
    overrides = {"blob_store": args.blob_store, "claim_check_bytes": args.claim_check_bytes}
    settings = settings.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    if not settings.kafka_bootstrap:
        msg = "agpt ingest needs a broker: set AGPT_KAFKA_BOOTSTRAP or --kafka-bootstrap"
        raise SettingsError(msg)
    _check_source(args)
    try:
        store = open_blob_store(
            settings.blob_store, endpoint_url=settings.s3_endpoint_url,
            region=settings.s3_region, access_key_id=settings.s3_access_key_id,
            secret_access_key=settings.s3_secret_access_key) if settings.blob_store else None
    except BlobStoreError as exc:
        raise UsageError(str(exc)) from exc
    if stop is None:
        with stop_on_signals(log, "flushing and stopping") as on_signal:
            return _send(settings, args, store, on_signal)
    return _send(settings, args, store, stop)


def _check_source(args: argparse.Namespace) -> None:
    """Raise UsageError for a source without what it needs (before any client is made)."""
    if args.source in NEEDS_PRODUCT and not args.product:
        msg = f"--source {args.source} needs --product"
        raise UsageError(msg)
    if args.source != "simulate" and not args.location:
        msg = f"--source {args.source} needs a location (folder, file or URL)"
        raise UsageError(msg)
    is_url = args.source == "video" and "://" in (args.location or "")
    if args.location and not is_url and not Path(args.location).exists():
        msg = f"{args.location}: no such file or directory"
        raise UsageError(msg)
    if args.source in ("folder", "watch") and not Path(args.location).is_dir():
        msg = f"--source {args.source}: {args.location} is not a directory"
        raise UsageError(msg)


def _send(settings: Settings, args: argparse.Namespace, store: BlobStore | None,
          stop: threading.Event) -> int:
    from ingest.transport.kafka import KafkaConfig, KafkaTransport

    assert settings.kafka_bootstrap is not None  # checked by run_ingest
    from agpt.connections import kafka_security

    transport = KafkaTransport(KafkaConfig(bootstrap=settings.kafka_bootstrap,
                                           client_id=f"agpt-ingest-{args.camera}",
                                           security=kafka_security(settings)))
    try:
        producer = transport.producer()
    except TransportError as exc:
        msg = f"nothing sent: {exc}"
        raise UsageError(msg) from exc
    publisher = FramePublisher(producer, topic=settings.frames_topic, blob_store=store,
                               claim_check_bytes=settings.claim_check_bytes)
    failed = False
    try:
        if args.source == "watch":
            from ingest.sources.folder_watch import FolderWatcher, watch_folder

            watcher = FolderWatcher(Path(args.location), product=args.product,
                                    camera_id=args.camera, settle_s=args.settle_s)
            print(f"watching {args.location} (sent files move to {watcher.sent_dir}); "
                  "Ctrl-C to stop", file=sys.stderr)
            watch_folder(watcher, publisher, stop=stop, poll_s=args.poll_s)
        else:
            publisher.send_all(frames_for(args, stop), flush_every=50)
    except (FrameTooLargeError, BlobStoreError, VideoSourceError, TransportError, OSError,
            ValueError) as exc:
        print(f"stopped after {publisher.sent} frames: {exc}", file=sys.stderr)
        failed = True
    finally:
        try:
            producer.close()
        except TransportError as exc:
            print(f"not every frame was acknowledged: {exc}", file=sys.stderr)
            failed = True
    if failed:
        return 1
    print(f"sent {publisher.sent} frames to {settings.frames_topic} "
          f"({publisher.claim_checked} through the blob store)")
    return 0
