"""Files written like any tool writes them: whole or not at all, with the umask's mode, through a
symlink to its target, and an exclusive lock for read-merge-write of a file others update too.

The baseline and the reports both come here; neither knows about temp files or locks.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

#: How long a wait for another process's lock goes unmentioned.
WAIT_NOTICE_S = 2.0


class WriteError(Exception):
    """A file could not be written; the message names it and says that the old one is untouched."""


def write_atomic(path: Path, text: str, what: str) -> None:
    """Write ``text`` to ``path`` (``what`` it is, for the message: "the baseline", "the report").

    The text goes to a temporary file beside the real target (a symlink is followed) and is
    renamed over it, so a crash never leaves half a file. A new file gets the mode that the umask
    gives; an existing file keeps its own.
    """
    target = path.resolve() if path.is_symlink() else path
    temporary = target.parent / f".{target.name}.{secrets.token_hex(4)}.tmp"
    try:
        # 0o666 through the umask, as open() gives any new file (mkstemp would give 0600).
        handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise WriteError(f"{path}: cannot write {what}: {error.strerror}; the old file is untouched") from None
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        if target.exists():
            os.chmod(temporary, target.stat().st_mode & 0o7777)
        os.replace(temporary, target)
    except OSError as error:
        temporary.unlink(missing_ok=True)
        raise WriteError(f"{path}: cannot write {what}: {error.strerror}; the old file is untouched") from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def locked(path: Path, what: str, on_wait: Callable[[str], None] | None = None) -> Iterator[None]:
    """Hold an exclusive lock for ``path`` (``what`` it is) while the block runs: a file beside it,
    ``.NAME.lock``, which names its holder (process, host, since when, command).

    Other processes that update the same file wait here, so each one's read, merge and write see
    the previous one's result; after ``WAIT_NOTICE_S`` a waiter tells ``on_wait`` who holds the
    lock and what it waits to do. The lock file is removed on release (POSIX); a waiter that then
    holds the lock of a removed file takes the new one instead.
    """
    target = path.resolve() if path.is_symlink() else path
    lock_path = target.parent / f".{target.name}.lock"

    def waiting() -> None:
        if on_wait is not None:
            on_wait(f"waiting to write {what} {path}: {lock_path.name} is held by {_holder(lock_path)}")

    try:
        handle = _acquire(lock_path, waiting)
    except OSError as error:
        raise WriteError(
            f"{path}: cannot write {what}: {error.strerror} (locking {lock_path.name}); the old file is untouched"
        ) from None
    try:
        _claim(handle)
        yield
    finally:
        _release(handle, lock_path)


def _claim(handle: int) -> None:
    """Write who holds the lock into its file, for whoever waits on it."""
    command = " ".join(os.path.basename(part) if index == 0 else part for index, part in enumerate(sys.argv))
    since = time.strftime("%H:%M:%S")
    os.ftruncate(handle, 0)
    os.lseek(handle, 0, os.SEEK_SET)
    os.write(handle, f"pid {os.getpid()} on {socket.gethostname()} since {since} ({command[:200]})".encode())


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.read_text(encoding="utf-8", errors="replace").strip() or "another process"
    except OSError:
        return "another process"


if sys.platform == "win32":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _acquire(lock_path: Path, waiting: Callable[[], None]) -> int:
        handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
        start, told = time.monotonic(), False
        while True:
            try:
                msvcrt.locking(handle, msvcrt.LK_NBLCK, 1)
                return handle
            except OSError:
                if not told and time.monotonic() - start >= WAIT_NOTICE_S:
                    waiting()
                    told = True
                time.sleep(0.05)

    def _release(handle: int, lock_path: Path) -> None:
        os.lseek(handle, 0, os.SEEK_SET)
        msvcrt.locking(handle, msvcrt.LK_UNLCK, 1)
        os.close(handle)

else:
    import fcntl

    def _acquire(lock_path: Path, waiting: Callable[[], None]) -> int:
        start, told = time.monotonic(), False
        while True:
            handle = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o666)
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if told:
                        fcntl.flock(handle, fcntl.LOCK_EX)  # said so once: now simply wait
                        break
                    if time.monotonic() - start >= WAIT_NOTICE_S:
                        waiting()
                        told = True
                    time.sleep(0.05)
            try:
                if os.fstat(handle).st_ino == os.stat(lock_path).st_ino:
                    return handle
            except FileNotFoundError:
                pass
            os.close(handle)  # its holder removed it while we waited: lock the new one

    def _release(handle: int, lock_path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            lock_path.unlink()
        os.close(handle)  # closing releases the lock, after the file is gone
