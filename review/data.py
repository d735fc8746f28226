"""The dashboard's handle on the database: one engine per server, cached read-only queries.

Every query goes through a ``storage`` repository function (the only home of SQL). Reads that
many sessions repeat (queue pages, counts, filter options, thumbnails, pool images) are cached
for a few seconds, or for good where the data never changes (a frame's thumbnail, a pool
image); writes clear what they make stale via :func:`after_write`. Nothing loads all rows.
"""

from __future__ import annotations

import io
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime

import streamlit as st
from PIL import Image
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ingest.blobstore import BlobStore, BlobStoreError
from review.images import blob_store_from_env, load_frame_image
from review.overlay import thumbnail
from storage import repositories as repo
from storage.engine import make_engine, make_session_factory

DATABASE_URL_ENV = "AGPT_DATABASE_URL"
DEFAULT_DATABASE_URL = "sqlite:///var/agpt.sqlite"
SHORT_TTL_S = 10  # queue pages and counts: fresh enough for a shift, cheap on a busy line
THUMBNAIL_EDGE = 160
# The queue's counts stop here (a count above it reads "10,000+"): counting every flagged
# verdict of a year on each page view is what grows with the table.
COUNT_CAP = repo.COUNT_CAP


def database_url() -> str:
    """The database the dashboard uses (``AGPT_DATABASE_URL``)."""
    return os.environ.get(DATABASE_URL_ENV, DEFAULT_DATABASE_URL)


@st.cache_resource(show_spinner=False)
def _engine(url: str) -> Engine:
    # One connection pool per URL for the whole server, shared by every browser session.
    return make_engine(url)


def sessions() -> sessionmaker[Session]:
    """A session factory on the dashboard's database."""
    return make_session_factory(_engine(database_url()))


@contextmanager
def reading() -> Iterator[Session]:
    """A session for reads; rolled back on exit."""
    with sessions()() as session:
        yield session


@contextmanager
def writing() -> Iterator[Session]:
    """A transaction for one user action: committed on success, rolled back on any error."""
    with sessions().begin() as session:
        yield session


@st.cache_data(ttl=30, show_spinner=False)
def database_problem(url: str) -> str | None:
    """Why the dashboard cannot use the database at ``url``, or None when it can.

    Checked with one cheap read (the account table, then the verdicts) every 30 s at most.
    """
    try:
        with reading() as session:
            repo.list_users(session=session)
            repo.count_unreviewed(session=session)
    except (DBAPIError, OperationalError) as exc:
        where = make_url(url).render_as_string(hide_password=True)
        return (f"Cannot read the database at {where} (is it migrated? run `agpt db upgrade`): "
                f"{str(getattr(exc, 'orig', exc)).strip()}")
    return None


def after_write() -> None:
    """Forget cached reads that a write may have changed (counts, pages, pool lists)."""
    for cached in (queue_page, unreviewed_count, pool_entries, pool_history, products):
        cached.clear()


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False, max_entries=200)
def queue_page(url: str, filters: repo.QueueFilter, limit: int,
               offset: int) -> tuple[list[repo.VerdictView], int]:
    """One page of the queue and the number of matching verdicts.

    Args:
        url: Database URL (part of the cache key).
        filters: What to show.
        limit: Page size.
        offset: Rows to skip.

    Returns:
        ``(views, total)``; the views carry no blobs; a total above :data:`COUNT_CAP`
        means "more than that" (counts stop there).
    """
    del url  # cache key only
    with reading() as session:
        views = repo.list_queue(session=session, filters=filters, limit=limit, offset=offset)
        total = repo.count_queue(session=session, filters=filters, cap=COUNT_CAP)
    return views, total


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def unreviewed_count(url: str) -> int:
    """Flagged frames nobody has reviewed yet (above :data:`COUNT_CAP`: more than that)."""
    del url
    with reading() as session:
        return repo.count_unreviewed(session=session, cap=COUNT_CAP)


@st.cache_data(ttl=60, show_spinner=False)
def queue_options(url: str) -> repo.QueueOptions:
    """Cameras and products for the queue's filters."""
    del url
    with reading() as session:
        return repo.queue_options(session=session)


@st.cache_data(ttl=60, show_spinner=False)
def products(url: str) -> list[str]:
    """Every product that has frames or a pool, sorted."""
    del url
    with reading() as session:
        named = set(repo.queue_options(session=session).products)
        named.update(repo.pool_products(session=session))
    return sorted(named)


@st.cache_resource(show_spinner=False)
def _blob_store(settings: tuple[tuple[str, str], ...]) -> BlobStore | None:
    try:
        return blob_store_from_env(dict(settings))
    except BlobStoreError:
        return None


def blob_store() -> BlobStore | None:
    """The workers' blob store (``AGPT_BLOB_STORE`` + ``AGPT_S3_*``), one per setting."""
    return _blob_store(tuple(sorted(
        (key, value) for key, value in os.environ.items()
        if key == "AGPT_BLOB_STORE" or key.startswith("AGPT_S3_"))))


def frame_image(images: repo.VerdictImages) -> tuple[bytes | None, str]:
    """The frame's image bytes (inline, else from the blob store), or None and why not."""
    return load_frame_image(store=blob_store(), inline=images.image, uri=images.image_uri)


@st.cache_data(show_spinner=False, max_entries=2000)
def thumbnails(url: str, verdict_ids: tuple[int, ...]) -> dict[int, bytes | None]:
    """PNG thumbnails with the mask outline for a page of verdicts (frames never change).

    Returns:
        ``{verdict_id: png}``; None where the image is not kept (or no longer, or the blob
        store is unreachable) or cannot be decoded.
    """
    del url
    with reading() as session:
        images = repo.queue_images(session=session, verdict_ids=list(verdict_ids))
    out: dict[int, bytes | None] = {}
    for verdict_id in verdict_ids:
        found = images.get(verdict_id)
        out[verdict_id] = None
        image = frame_image(found)[0] if found is not None else None
        if found is not None and image is not None:
            try:
                out[verdict_id] = _png(thumbnail(image, found.mask_png, THUMBNAIL_EDGE))
            except (OSError, ValueError):  # undecodable blob: show a placeholder
                out[verdict_id] = None
    return out


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def pool_entries(url: str, product: str) -> list[repo.PoolEntryInfo]:
    """A product's pool entries, removed ones included."""
    del url
    with reading() as session:
        return repo.list_pool_entries(session=session, product=product, include_inactive=True)


@st.cache_data(show_spinner=False, max_entries=2000)
def pool_thumbnails(url: str, entry_ids: tuple[int, ...]) -> dict[int, bytes]:
    """PNG thumbnails of pool entries (entries' images never change)."""
    del url
    with reading() as session:
        images = repo.pool_entry_images(session=session, entry_ids=list(entry_ids))
    out: dict[int, bytes] = {}
    for entry_id, data in images.items():
        try:
            out[entry_id] = _png(thumbnail(data, None, THUMBNAIL_EDGE))
        except (OSError, ValueError):
            continue
    return out


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def pool_history(url: str, product: str) -> tuple[int, list[repo.PoolChangeView]]:
    """A product's pool version and its change log, newest first (up to 200)."""
    del url
    with reading() as session:
        version = repo.pool_version(session=session, product=product)
        changes = repo.list_pool_changes(session=session, product=product, limit=200)
    return version, changes


@st.cache_data(ttl=30, show_spinner=False)
def rate_series(url: str, since: datetime, bucket_s: int) -> list[repo.RatePoint]:
    """Frames, flagged and unreviewed counts per camera, product and time bucket."""
    del url
    with reading() as session:
        return repo.rate_series(session=session, since=since, bucket_s=bucket_s)


@st.cache_data(ttl=SHORT_TTL_S, show_spinner=False)
def review_counts(url: str, since: datetime) -> dict[str, int]:
    """Flagged frames since ``since`` by review status: unreviewed and each decision.

    A window, not all time: every flagged verdict ever is what grows with the table.
    """
    del url
    with reading() as session:
        return repo.review_counts(session=session, since=since)


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
