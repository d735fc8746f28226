"""Words and badges the pages share: review status, decisions, times."""

from __future__ import annotations

from datetime import UTC, datetime

STATUS_BADGES = {
    None: ":orange-badge[unreviewed]",
    "defect": ":red-badge[defect confirmed]",
    "normal": ":green-badge[not a defect]",
    "unsure": ":gray-badge[unsure]",
}

ACTION_WORDS = {
    "confirm_defect": "confirmed the defect",
    "not_defect": "marked it not a defect",
    "not_defect+add_to_pool": "marked it not a defect and added it to the pool",
    "unsure": "marked it unsure",
    "undo_add_to_pool": "undid the pool addition",
}


def status_badge(status: str | None) -> str:
    """A coloured Markdown badge for a verdict's review status."""
    return STATUS_BADGES.get(status, f":gray-badge[{status}]")


def action_words(action: str) -> str:
    """A review-log action name as a phrase ("confirmed the defect")."""
    return ACTION_WORDS.get(action, action.replace("_", " "))


def count(n: int, cap: int) -> str:
    """A count that stopped at ``cap``: ``"10,000+"`` above it, else the number."""
    return f"{cap:,}+" if n > cap else f"{n:,}"


def when(moment: datetime | None) -> str:
    """A timestamp as the operator reads it (UTC, to the second)."""
    if moment is None:
        return "-"
    if moment.utcoffset() is not None:
        moment = moment.astimezone(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S} UTC"
