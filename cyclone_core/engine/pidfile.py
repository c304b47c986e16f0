"""One daemon per pid file.

The file holds the owner's pid and stays locked (``flock``) while the owner runs, so a second
instance is refused whatever the timing, and a file left behind by a killed daemon (its lock
went with it) is simply taken over.  A file without a lock naming a live process (a Cyclone
2.x daemon, say) is respected too.  The owner removes the file when it stops.

Usage::

    with PidFile("/run/cyclone/master.pid"):
        ...
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path
from types import TracebackType

from cyclone_core.errors import CycloneError

__all__ = ("PidFile",)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _read_pid(fd: int) -> int | None:
    os.lseek(fd, 0, os.SEEK_SET)
    text = os.read(fd, 64).decode(errors="replace")
    # Cyclone 2.x wrote "pid;timestamp".
    head = text.strip().split(";", 1)[0]
    return int(head) if head.isdigit() else None


class PidFile:
    """Holds ``path`` for this process; :class:`CycloneError` if another live process has it.

    :param path: the pid file; its directory must exist.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the pid file, replacing a stale one."""
        for _ in range(10):  # retried only when the file is replaced under us
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise CycloneError(f"pid file {self.path}: {exc.strerror}") from None
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = _read_pid(fd)
                os.close(fd)
                raise CycloneError(f"already running (pid {pid}, pid file {self.path})") from None
            try:
                if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                    os.close(fd)  # the owner removed it while we waited: try the new file
                    continue
            except FileNotFoundError:
                os.close(fd)
                continue
            pid = _read_pid(fd)
            if pid is not None and pid != os.getpid() and _alive(pid):
                os.close(fd)
                raise CycloneError(
                    f"pid file {self.path} names running process {pid}; remove it if that is not a Cyclone daemon"
                )
            os.ftruncate(fd, 0)
            os.lseek(fd, 0, os.SEEK_SET)
            os.write(fd, f"{os.getpid()}\n".encode())
            self._fd = fd
            return
        raise CycloneError(f"pid file {self.path} keeps changing; is another instance starting?")

    def release(self) -> None:
        """Remove the pid file (if it is still ours) and drop the lock."""
        if self._fd is None:
            return
        try:
            if os.fstat(self._fd).st_ino == os.stat(self.path).st_ino:
                self.path.unlink()
        except FileNotFoundError:
            pass
        os.close(self._fd)
        self._fd = None

    def __enter__(self) -> PidFile:
        self.acquire()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()
