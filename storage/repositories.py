"""Every repository function, re-exported from the modules that own them by role.

All functions are keyword-only, take a ``Session`` and never commit: the caller owns the
transaction.
"""

from storage.errors import (
    NotFoundError,
    PoolEntryNotFoundError,
    StorageError,
    UnsupportedDatabaseError,
    VerdictNotFoundError,
)
from storage.pool import (
    PoolEntryInfo,
    add_pool_entry,
    deactivate_pool_entry,
    get_pool_entry,
    list_pool_entries,
    list_pool_images,
    pool_products,
    pool_version,
)
from storage.review_log import (
    CHAT_ROLES,
    ChatMessageView,
    ReviewActionView,
    add_chat_message,
    list_chat_messages,
    list_review_actions,
    record_review_action,
)
from storage.verdicts import (
    VerdictRecord,
    VerdictView,
    count_verdicts,
    get_verdict_images,
    list_verdicts,
    record_verdicts,
)

__all__ = [
    "CHAT_ROLES",
    "ChatMessageView",
    "NotFoundError",
    "PoolEntryInfo",
    "PoolEntryNotFoundError",
    "ReviewActionView",
    "StorageError",
    "UnsupportedDatabaseError",
    "VerdictNotFoundError",
    "VerdictRecord",
    "VerdictView",
    "add_chat_message",
    "add_pool_entry",
    "count_verdicts",
    "deactivate_pool_entry",
    "get_pool_entry",
    "get_verdict_images",
    "list_chat_messages",
    "list_pool_entries",
    "list_pool_images",
    "list_review_actions",
    "list_verdicts",
    "pool_products",
    "pool_version",
    "record_review_action",
    "record_verdicts",
]
