"""Pool: a product's normal reference images; add (upload), remove, restore; who changed what.

Engineers and admins change pools; the storage function that executes each change checks
the role again in the database, so an operator is refused even with a forged session. Every
change bumps the product's pool version and is announced to the workers.
"""

from __future__ import annotations

import streamlit as st

from review import auth, data, labels
from review.frame_actions import announce_message, flash, show_flash
from review.uploads import UploadRejectedError, validated_png
from storage import repositories as repo

COLUMNS = 6
MAX_UPLOADS = 20


def render() -> None:
    """Draw the pool page."""
    user = auth.page_user()
    url = data.database_url()
    st.title("Pool")
    products = data.products(url)
    if not products:
        st.info("No product has frames or a pool yet.")
        return
    product = st.selectbox("Product", products, key="pool_product")
    version, changes = data.pool_history(url, product)
    entries = data.pool_entries(url, product)
    active = [entry for entry in entries if entry.active]
    removed = [entry for entry in entries if not entry.active]
    shown_version, shown_active, shown_removed, _ = st.columns([1, 1, 1, 3])
    shown_version.metric("Pool version", version)
    shown_active.metric("References", len(active))
    shown_removed.metric("Removed", len(removed))
    show_flash()
    may_change = user.may("engineer")
    if not may_change:
        st.caption("Operators see the pool; engineers and admins change it.")

    if may_change:
        _upload(user, product)
    st.subheader("References")
    if not active:
        st.info(f"The {product} pool is empty: the model cannot judge {product} frames "
                "until normals are added.")
    _grid(url, user, active, action="Remove" if may_change else None)
    if removed:
        with st.expander(f"Removed references ({len(removed)})"):
            _grid(url, user, removed, action="Restore" if may_change else None)
    st.subheader("Version history")
    _history(changes)


def _upload(user: auth.CurrentUser, product: str) -> None:
    with st.expander("Add references (PNG or JPEG)"), st.form("pool_upload",
                                                              clear_on_submit=True):
        files = st.file_uploader("Normal images of this product", type=["png", "jpg", "jpeg"],
                                 accept_multiple_files=True, key="pool_files")
        note = st.text_input("Note", key="pool_note", max_chars=500)
        submitted = st.form_submit_button("Add to pool", type="primary")
    if not submitted or not files:
        return
    if len(files) > MAX_UPLOADS:
        st.error(f"At most {MAX_UPLOADS} images at a time.")
        return
    accepted: list[tuple[str, bytes]] = []
    refused: list[str] = []
    for file in files:
        try:
            accepted.append((file.name, validated_png(file.getvalue())))
        except UploadRejectedError as exc:
            refused.append(f"{file.name}: {exc}.")
    for line in refused:
        st.error(line)
    if not accepted:
        return
    try:
        with data.writing() as session:
            made = [repo.pool_add(session=session, user=user.name, product=product, image=png,
                                  note=note.strip() or f"upload {name}")
                    for name, png in accepted]
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except ValueError as exc:
        st.error(f"Not added: {exc}")
        return
    data.after_write()
    for line in refused:
        flash("error", line)
    flash("success", f"Added {len(made)} reference(s) to the {product} pool, version "
          f"{made[-1].version}. {announce_message()}")
    st.rerun()


def _grid(url: str, user: auth.CurrentUser, entries: list[repo.PoolEntryInfo], *,
          action: str | None) -> None:
    thumbs = data.pool_thumbnails(url, tuple(entry.id for entry in entries))
    for start in range(0, len(entries), COLUMNS):
        for column, entry in zip(st.columns(COLUMNS), entries[start:start + COLUMNS],
                                 strict=False):
            with column:
                thumb = thumbs.get(entry.id)
                if thumb is None:
                    st.caption("(undecodable image)")
                else:
                    st.image(thumb, width="stretch")
                gone = (f" · removed by {entry.deactivated_by}" if not entry.active else "")
                st.caption(f"#{entry.id} · {entry.source} · {entry.added_by} · "
                           f"{entry.added_at:%Y-%m-%d}{gone}")
                if action and st.button(action, key=f"pool_{action.lower()}_{entry.id}",
                                        width="stretch"):
                    _change(user, entry, action)


def _change(user: auth.CurrentUser, entry: repo.PoolEntryInfo, action: str) -> None:
    change_fn = repo.pool_remove if action == "Remove" else repo.pool_restore
    try:
        with data.writing() as session:
            change = change_fn(session=session, user=user.name, entry_id=entry.id)
    except repo.PermissionDeniedError as exc:
        st.error(f"Refused: {exc}")
        return
    except repo.NotFoundError as exc:
        st.error(f"Not changed: {exc}")
        return
    data.after_write()
    done, state = ("Removed", "removed") if action == "Remove" else ("Restored", "active")
    if change is None:
        flash("info", f"Entry #{entry.id} was already {state}.")
    else:
        flash("success", f"{done} entry #{entry.id}: {entry.product} pool version "
              f"{change.version}. {announce_message()}")
    st.rerun()


def _history(changes: list[repo.PoolChangeView]) -> None:
    if not changes:
        st.caption("No changes recorded yet.")
        return
    st.dataframe(
        [{"version": change.version, "change": change.action, "entry": change.entry_id,
          "by": change.actor, "when": labels.when(change.created_at),
          "from frame": change.verdict_id, "note": change.note,
          "announced": labels.when(change.announced_at) if change.announced_at else "pending"}
         for change in changes],
        hide_index=True, width="stretch",
    )


if __name__ == "__main__":
    render()
