"""Reading a ``file://`` claim check without ever leaving the blob store.

``image_uri`` comes from a Kafka message: hostile. A URI is read only when it names a regular
file inside the store's directory:

* the URI is percent-decoded once; a NUL, a host other than ``localhost``, a query or a
  fragment, or a ``..`` component refuse it (``..`` is never resolved: with symlinks its
  lexical meaning is not its real one); doubled slashes and ``.`` components are dropped;
* its path must start with the store's root (as configured or as resolved);
* the rest is opened one component at a time below a descriptor of the root, each with
  ``O_NOFOLLOW``: a symlink anywhere below the root is refused, so nothing outside can be
  reached; the last component is opened ``O_NONBLOCK`` (a FIFO cannot block the open) and
  must be a regular file (``fstat``), so ``/dev/zero``-like devices and FIFOs are refused;
* at most ``max_bytes`` + 1 bytes are read, whatever ``stat`` said, within ``timeout_s``.

Every refusal that could tell a sender whether some path exists has one reason code,
``not_in_store``; the worker's log keeps the detail.
"""

from __future__ import annotations

import logging
import os
import stat
import threading
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from urllib.parse import unquote_to_bytes, urlsplit

from ingest.envelope import FrameError

log = logging.getLogger(__name__)

_CHUNK = 1024 * 1024
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC


def not_in_store(uri: str, detail: str) -> FrameError:
    """The one refusal for a URI that does not name a readable file in the store."""
    log.info("image_uri refused (%s): %s", detail, _shown(uri))
    msg = f"frame 'image_uri' does not name a readable file in the blob store: {_shown(uri)}"
    return FrameError(msg, reason="not_in_store", field_name="image_uri")


def store_relative_parts(roots: Sequence[Path], uri: str) -> list[str]:
    """The path components of ``uri`` below one of ``roots`` (checked, not yet opened).

    Args:
        roots: Absolute spellings of the store's root directory (configured, resolved).
        uri: The frame's ``image_uri``.

    Raises:
        FrameError: ``bad_uri`` for a scheme other than ``file``, ``not_in_store`` for
            anything that does not lie below a root.
    """
    try:
        parts = urlsplit(uri)
    except ValueError as exc:  # e.g. an unbalanced "[" in the host part
        raise not_in_store(uri, f"unparsable: {exc}") from exc
    if parts.scheme.lower() != "file":
        msg = (f"frame 'image_uri' scheme {parts.scheme!r} is not that of the blob store "
               "(file://)")
        raise FrameError(msg, reason="bad_uri", field_name="image_uri")
    if parts.netloc not in ("", "localhost") or parts.query or parts.fragment:
        raise not_in_store(uri, "host, query or fragment")
    try:
        path = unquote_to_bytes(parts.path).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise not_in_store(uri, "percent-encoding is not UTF-8") from exc
    if "\x00" in path or not path.startswith("/"):
        raise not_in_store(uri, "NUL or relative path")
    components = [c for c in path.split("/") if c not in ("", ".")]
    if ".." in components:
        raise not_in_store(uri, "'..' component")
    for root in roots:
        prefix = [c for c in PurePosixPath(root).parts if c != "/"]
        if components[: len(prefix)] == prefix and len(components) > len(prefix):
            return components[len(prefix):]
    raise not_in_store(uri, "outside the store root")


def read_in_store(roots: Sequence[Path], uri: str, *, max_bytes: int,
                  timeout_s: float) -> bytes:
    """Read the regular file ``uri`` names inside the store, refusing everything else.

    Args:
        roots: Spellings of the store root; the first is opened as the jail's top.
        uri: The frame's ``image_uri``.
        max_bytes: Largest blob accepted; enforced while reading.
        timeout_s: Longest the open and read may take (a hung network share).

    Returns:
        The blob's bytes.

    Raises:
        FrameError: ``bad_uri``, ``not_in_store``, ``oversized`` or ``blob_timeout``.
    """
    relative = store_relative_parts(roots, uri)
    outcome: list[bytes | BaseException] = []
    done = threading.Event()

    def work() -> None:
        try:
            outcome.append(_read_below(roots[0], relative, uri, max_bytes))
        except BaseException as exc:  # handed to the caller's thread
            outcome.append(exc)
        finally:
            done.set()

    # A daemon thread: a read stuck on a dead share cannot keep the process from exiting.
    threading.Thread(target=work, name="blob-read", daemon=True).start()
    if not done.wait(timeout_s):
        msg = f"reading 'image_uri' took longer than {timeout_s:g} s: {_shown(uri)}"
        raise FrameError(msg, reason="blob_timeout", field_name="image_uri")
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _read_below(root: Path, relative: list[str], uri: str, max_bytes: int) -> bytes:
    try:
        directory = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as exc:
        msg = f"the blob store {root} cannot be opened: {exc.strerror}"
        raise FrameError(msg, reason="blob_store_unavailable", field_name="image_uri") from exc
    fd = -1
    try:
        for name in relative[:-1]:
            child = os.open(name, _DIR_FLAGS, dir_fd=directory)
            os.close(directory)
            directory = child
        fd = os.open(relative[-1], _FILE_FLAGS, dir_fd=directory)
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise not_in_store(uri, f"not a regular file (mode {info.st_mode:o})")
        os.set_blocking(fd, True)
        chunks: list[bytes] = []
        total = 0
        while total <= max_bytes:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if total > max_bytes:
            msg = f"image at 'image_uri' is larger than the {max_bytes}-byte limit"
            raise FrameError(msg, reason="oversized", field_name="image_uri")
        return b"".join(chunks)
    except OSError as exc:  # ENOENT, ELOOP (a symlink), ENOTDIR, EACCES, EISDIR, ...
        raise not_in_store(uri, exc.strerror or type(exc).__name__) from exc
    finally:
        if fd >= 0:
            os.close(fd)
        os.close(directory)


def _shown(uri: str, limit: int = 200) -> str:
    text = uri.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    return text if len(text) <= limit else text[: limit - 1] + "…"
