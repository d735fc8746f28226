"""`agpt pool add/list/remove`: the normal reference images per product."""

from __future__ import annotations

import argparse
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agpt.errors import UsageError
from agpt.prestart import database
from agpt.settings import Settings

if TYPE_CHECKING:
    from inference.pool import PoolChange
    from ingest.transport.base import Producer


def run_pool_add(settings: Settings, args: argparse.Namespace) -> int:
    """Add ``args.images`` to ``args.product``'s pool, commit, announce; exit code 0 or 1.

    Raises:
        UsageError: A file is missing or not an image (nothing is added).
    """
    from inference.pool import UnreadablePoolImageError, add_references

    images = []
    for name in args.images:
        try:
            images.append(Path(name).read_bytes())
        except OSError as exc:
            msg = f"nothing added: {name}: {exc.strerror or exc}"
            raise UsageError(msg) from exc
    try:
        return _pool_change(settings, functools.partial(
            add_references, product=args.product, images=images, added_by=_actor(args)))
    except UnreadablePoolImageError as exc:
        msg = f"nothing added: {args.images[exc.index]}: {exc.reason}"
        raise UsageError(msg) from exc


def run_pool_remove(settings: Settings, args: argparse.Namespace) -> int:
    """Take entry ``args.id`` out of its pool (the row stays for the audit); exit code 0 or 1.

    Raises:
        UsageError: No such entry.
    """
    from inference.pool import remove_reference
    from storage.errors import PoolEntryNotFoundError

    try:
        return _pool_change(settings, functools.partial(
            remove_reference, entry_id=args.id, actor=_actor(args)))
    except PoolEntryNotFoundError as exc:
        msg = f"{exc} (`agpt pool list --product P --all` lists the entries)"
        raise UsageError(msg) from exc


def run_pool_list(settings: Settings, args: argparse.Namespace) -> int:
    """Print the pool version and the entries of ``args.product``; exit code 0."""
    from storage import repositories

    session_factory = database(settings)
    with session_factory() as session:
        entries = repositories.list_pool_entries(session=session, product=args.product,
                                                 include_inactive=args.all)
        version = repositories.pool_version(session=session, product=args.product)
    print(f"product {args.product}: pool version {version}")
    for e in entries:
        state = "" if e.active else "  (removed)"
        print(f"{e.id:>8}  {e.added_at:%Y-%m-%d %H:%M:%S}  {e.source:<8}  {e.added_by}{state}")
    return 0


def pool_producer(settings: Settings) -> Producer:
    """A producer on the (compacted) pool topic of the configured broker.

    Raises:
        TransportError: the broker is unreachable.
    """
    from agpt import wiring

    transport = wiring.transport(settings)
    transport.ensure_topics([settings.pool_topic], partitions=1, compacted=True)
    return transport.producer()


def _pool_change(settings: Settings, change: Callable[..., PoolChange]) -> int:
    """Run a pool change (commit, then announce) and report it."""
    from ingest.transport.base import TransportError

    session_factory = database(settings)
    try:
        # Before the change: an unreachable broker stops it. In process: not announced.
        producer = pool_producer(settings) if settings.kafka_bootstrap else None
    except TransportError as exc:
        msg = f"nothing changed: cannot reach the broker ({exc})"
        raise UsageError(msg) from exc
    try:
        done = change(session_factory=session_factory, producer=producer,
                      topic=settings.pool_topic)
    except TransportError as exc:
        print(f"the pool change is committed but was not announced ({exc}); workers pick "
              "it up when restarted", file=sys.stderr)
        return 1
    finally:
        if producer is not None:
            producer.close()
    where = f"announced on {settings.pool_topic}" if producer else "in-process: not announced"
    print(f"product {done.product}: {done.references} active references, pool version "
          f"{done.version} ({where})")
    return 0


def _actor(args: argparse.Namespace) -> str:
    return str(args.by or os.environ.get("USER") or "cli")
