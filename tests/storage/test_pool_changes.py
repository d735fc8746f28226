"""Pool versions and the change log: every add, removal and restore raises the version."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from storage.repositories import (
    PermissionDeniedError,
    create_user,
    list_pool_changes,
    list_pool_entries,
    list_pool_images,
    mark_pool_changes_announced,
    pool_add,
    pool_entry_images,
    pool_remove,
    pool_restore,
    pool_version,
    pool_versions,
    unannounced_pool_changes,
)
from tests.storage.factories import png_bytes


@pytest.fixture
def users(session: Session) -> None:
    create_user(session=session, name="olga", password="operator-pw", role="operator")
    create_user(session=session, name="ed", password="engineer-pw", role="engineer")


def test_versions_only_grow_through_remove_and_restore(session: Session, users: None) -> None:
    first = pool_add(session=session, user="ed", product="bottle", image=png_bytes())
    pool_add(session=session, user="ed", product="bottle", image=png_bytes((9, 9, 9)))
    pool_add(session=session, user="ed", product="can", image=png_bytes())
    removed = pool_remove(session=session, user="ed", entry_id=first.entry_id)
    restored = pool_restore(session=session, user="ed", entry_id=first.entry_id)
    session.commit()

    assert removed is not None
    assert restored is not None
    history = list_pool_changes(session=session, product="bottle")
    assert [(c.version, c.action) for c in history] == [
        (4, "restore"), (3, "remove"), (2, "add"), (1, "add")]
    assert pool_versions(session=session) == {"bottle": 4, "can": 1}
    assert len(list_pool_images(session=session, product="bottle")) == 2
    # Idempotent: removing twice or restoring an active entry changes nothing.
    assert pool_restore(session=session, user="ed", entry_id=first.entry_id) is None
    assert pool_version(session=session, product="bottle") == 4


def test_operators_are_refused_pool_changes(session: Session, users: None) -> None:
    with pytest.raises(PermissionDeniedError):
        pool_add(session=session, user="olga", product="bottle", image=png_bytes())
    entry = pool_add(session=session, user="ed", product="bottle", image=png_bytes())
    for action in (pool_remove, pool_restore):
        with pytest.raises(PermissionDeniedError):
            action(session=session, user="olga", entry_id=entry.entry_id)


def test_uploads_are_reencoded_and_garbage_refused(session: Session, users: None) -> None:
    import io

    from PIL import Image

    jpeg = io.BytesIO()
    Image.new("RGB", (16, 8), (200, 10, 10)).save(jpeg, format="JPEG")
    change = pool_add(session=session, user="ed", product="bottle", image=jpeg.getvalue())
    stored = pool_entry_images(session=session, entry_ids=[change.entry_id])[change.entry_id]
    assert stored.startswith(b"\x89PNG")
    with pytest.raises(ValueError, match="not a readable image"):
        pool_add(session=session, user="ed", product="bottle", image=b"<html>")
    [entry] = list_pool_entries(session=session, product="bottle")
    assert (entry.source, entry.added_by, entry.active) == ("upload", "ed", True)


def test_the_outbox_lists_unannounced_changes_until_marked(session: Session,
                                                           users: None) -> None:
    a = pool_add(session=session, user="ed", product="bottle", image=png_bytes())
    b = pool_add(session=session, user="ed", product="can", image=png_bytes())
    session.commit()
    assert [c.id for c in unannounced_pool_changes(session=session)] == [a.id, b.id]

    mark_pool_changes_announced(session=session, change_ids=[a.id])
    session.commit()
    assert [c.id for c in unannounced_pool_changes(session=session)] == [b.id]
    assert list_pool_changes(session=session, product="bottle")[0].announced_at is not None
