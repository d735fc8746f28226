"""Words and badges the pages share: review status, decisions, times."""

from __future__ import annotations

from collections.abc import Mapping
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


def calibration_note(details: Mapping[str, object]) -> tuple[bool, str] | None:
    """How far a verdict's threshold can be trusted, from its evidence, or None if unknown.

    The few-shot detector records how many references calibrated the threshold and whether
    its false-alarm rate could be checked on them (``false_alarm_rate_checked``: false with
    fewer than four references, whose threshold rests on shifted and rotated copies), and
    whether the image-level (global) check had the line's recent frames to go by
    (``global_bound``: "references" before the stream window is ready).

    Returns:
        ``(checked, sentence)`` for the frame page.
    """
    checked = details.get("false_alarm_rate_checked")
    if not isinstance(checked, bool):
        return None
    references = details.get("references")
    rate = details.get("false_alarm_rate")
    count = (f"{references} reference{'' if references == 1 else 's'}"
             if isinstance(references, int) and not isinstance(references, bool)
             else "the references")
    target = (f"{100 * rate:.3g} %" if isinstance(rate, int | float)
              and not isinstance(rate, bool) else "the configured rate")
    unstreamed = details.get("global_bound") == "references"
    drift = (" The image-level check still rests on the references alone (the line's recent"
             " frames were not in yet): its false-alarm rate is not verified."
             if unstreamed else "")
    if checked:
        return not unstreamed, (f"Threshold calibrated on {count} for {target} false alarms "
                                "(leave-one-out among them, with shifted and rotated "
                                f"copies).{drift}")
    return False, (f"Threshold estimated from {count}; false-alarm rate ({target}) not "
                   f"verifiable with so few references: add normal frames to the pool.{drift}")
