"""The ``lustre-ost-io`` task: measure one OST by writing and reading back a file pinned to it.

Steps (Lustre mode):

1. ``lfs setstripe -c 1 -i N FILE`` creates an empty file whose only object is meant for OST N;
2. ``lfs getstripe -y FILE`` confirms it: the MDS *starts* its search at N and moves on when
   N is inactive, full or failing, so a misplaced object is reported as a failure
   (``object placed on OST0003, not OST000a``) instead of measuring the wrong OST;
3. ``total_size`` bytes are written in ``block_size`` blocks (then ``fsync`` if asked), timed;
4. the data is read back, timed, so that the OST is measured rather than the client's page
   cache: with ``O_DIRECT`` and a page-aligned buffer where the file system supports it (Lustre
   does), otherwise the file is flushed and its cached pages are dropped with
   ``posix_fadvise(POSIX_FADV_DONTNEED)`` first (the kernel only drops clean pages, hence the
   flush);
5. the file is deleted, always, also after a failure.

In plain mode (no ``ost``) steps 1 and 2 are skipped and the directory itself is measured.
"""

from __future__ import annotations

import errno
import mmap
import os
import re
import time
from typing import Any, ClassVar

import attrs

from cyclone_core import ByteSize, Metric, Outcome, Status, Task, TaskContext
from cyclone_lustre_ost.lustre import LustreError, LustreTools, ost_label
from cyclone_lustre_ost.options import as_size, positive

__all__ = ("LustreOstIoTask",)

_PAGE = mmap.PAGESIZE
# O_DIRECT needs offsets, lengths and buffers aligned to the logical block size; 4 KiB covers
# every device and Lustre.
_DIRECT_ALIGN = 4096
_DEFAULT_TOTAL = ByteSize(64 << 20)
_DEFAULT_BLOCK = ByteSize(1 << 20)


def _probe_file_name(label: str, task_id: str) -> str:
    # Task ids are unique but may hold characters that do not belong in a file name.
    return f".cyclone-probe-{label}-{re.sub(r'[^A-Za-z0-9._-]', '_', task_id)}"


@attrs.define(kw_only=True)
class LustreOstIoTask(Task):
    """Write and read back ``total_size`` bytes on one OST (or in a plain directory).

    :param path: directory the probe file is created in (on the file system to measure).
    :param ost: OST index to pin the file to; ``None`` measures ``path`` as a plain directory.
    :param fsname: file system name, for the ``fs`` label (default: the path in plain mode).
    :param active: ``False`` when discovery found the OST deactivated: the task reports it as
        failed without touching the file system, so every selected OST gets a row.
    :param total_size: bytes written and read back.
    :param block_size: bytes per write and read call.
    :param fsync: include an ``fsync`` in the write time; without it the write measures how fast
        the client absorbs the data (the file is still flushed, untimed, before the read).
    :param slow_threshold: seconds; a write or read slower than this is flagged
        (``lustre_ost_slow`` = 1 and ``slow`` in the payload).
    :param lfs_bin: the ``lfs`` program.
    :param sudo: run ``lfs`` with ``sudo -n``.
    :param tool_timeout: seconds each ``lfs`` call may take.
    """

    name: ClassVar[str] = "lustre-ost-io"

    path: str
    ost: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    fsname: str = ""
    active: bool = True
    total_size: ByteSize = attrs.field(default=_DEFAULT_TOTAL, converter=as_size, validator=positive)
    block_size: ByteSize = attrs.field(default=_DEFAULT_BLOCK, converter=as_size, validator=positive)
    fsync: bool = True
    slow_threshold: float | None = attrs.field(default=None, validator=positive)
    lfs_bin: str = "lfs"
    sudo: bool = False
    tool_timeout: float = attrs.field(default=60.0, validator=positive)

    @property
    def label(self) -> str:
        """``OST000a`` in Lustre mode, else ``dir``."""
        return ost_label(self.ost) if self.ost is not None else "dir"

    def labels(self) -> dict[str, str]:
        """The labels of every metric: ``fs``, plus ``ost`` and ``index`` in Lustre mode."""
        if self.ost is None:
            return {"fs": self.fsname or self.path}
        return {"fs": self.fsname, "ost": self.label, "index": str(self.ost)}

    def execute(self, ctx: TaskContext) -> Outcome:
        """Run the probe; see the module documentation for the steps."""
        payload: dict[str, Any] = {"mode": "plain" if self.ost is None else "lustre", **self.labels()}
        if self.ost is not None:
            payload["index"] = self.ost
        if not self.active:
            return self._failed(payload, "inactive", f"{self.label} is inactive", active=False)
        file = os.path.join(self.path, _probe_file_name(self.label, ctx.task_id))
        payload["file"] = file
        try:
            if self.ost is not None:
                problem = self._place(file, payload)
                if problem is not None:
                    return problem
            return self._measure(file, payload)
        finally:
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass
            except OSError as exc:  # the result still stands; the leftover is worth a log line
                ctx.log.warning("cannot delete probe file %s: %s", file, exc.strerror)

    # -- steps --------------------------------------------------------------------------

    def _place(self, file: str, payload: dict[str, Any]) -> Outcome | None:
        assert self.ost is not None
        tools = LustreTools(lfs_bin=self.lfs_bin, sudo=self.sudo, timeout=self.tool_timeout)
        try:
            tools.setstripe(file, self.ost)
            placed = tools.stripe_index(file)
        except LustreError as exc:
            return self._failed(payload, "lustre_error", str(exc))
        if placed != self.ost:
            payload["placed_on"] = ost_label(placed)
            return self._failed(payload, "misplaced", f"object placed on {ost_label(placed)}, not {self.label}")
        return None

    def _measure(self, file: str, payload: dict[str, Any]) -> Outcome:
        buffer = mmap.mmap(-1, _round_up(self.block_size, _PAGE))  # page-aligned, as O_DIRECT wants
        try:
            buffer.write(b"\xa5" * len(buffer))
            write_at, write_seconds = self._write(file, buffer)
            read_at, read_seconds, direct, read_bytes = self._read(file, buffer)
        except _IoFailure as exc:
            return self._failed(payload, "io_error", str(exc))
        finally:
            buffer.close()
        if read_bytes != self.total_size:
            return self._failed(payload, "io_error", f"read back {read_bytes} bytes of {self.total_size} from {file}")
        slow = self.slow_threshold is not None and max(write_seconds, read_seconds) > self.slow_threshold
        payload |= {
            "state": "ok",
            "probe_bytes": int(self.total_size),
            "block_size": int(self.block_size),
            "fsync": self.fsync,
            "direct_io": direct,
            "write_timestamp": write_at,
            "read_timestamp": read_at,
            "write_seconds": write_seconds,
            "read_seconds": read_seconds,
            "write_bytes_per_second": self.total_size / write_seconds,
            "read_bytes_per_second": self.total_size / read_seconds,
        }
        labels = self.labels()
        metrics = [
            Metric("lustre_ost_write_bytes_per_second", payload["write_bytes_per_second"], "bytes/s", labels, write_at),
            Metric("lustre_ost_read_bytes_per_second", payload["read_bytes_per_second"], "bytes/s", labels, read_at),
            Metric("lustre_ost_write_seconds", write_seconds, "s", labels, write_at),
            Metric("lustre_ost_read_seconds", read_seconds, "s", labels, read_at),
            Metric("lustre_ost_probe_bytes", float(self.total_size), "bytes", labels),
            *self._state_metrics(ok=True, active=True),
        ]
        if self.slow_threshold is not None:
            payload |= {"slow": slow, "slow_threshold": self.slow_threshold}
            metrics.append(Metric("lustre_ost_slow", 1.0 if slow else 0.0, "", labels))
        return Outcome(metrics=metrics, payload=payload)

    def _write(self, file: str, buffer: mmap.mmap) -> tuple[float, float]:
        # The Lustre file exists (setstripe made it); a plain one must not, so a stray file of
        # the same name is never overwritten.
        flags = os.O_WRONLY | (os.O_CREAT | os.O_EXCL if self.ost is None else 0)
        try:
            fd = os.open(file, flags, 0o600)
            try:
                started_at, start = time.time(), time.perf_counter()
                _transfer(os.write, fd, buffer, self.total_size, self.block_size)
                if self.fsync:
                    os.fsync(fd)
                seconds = time.perf_counter() - start
                if not self.fsync:
                    os.fsync(fd)  # untimed: the read below must find nothing dirty in the cache
            finally:
                os.close(fd)
        except OSError as exc:
            raise _IoFailure(f"write to {file} failed: {exc.strerror or exc}") from exc
        return started_at, max(seconds, 1e-9)

    def _read(self, file: str, buffer: mmap.mmap) -> tuple[float, float, bool, int]:
        try:
            fd, direct = self._open_for_read(file)
            try:
                started_at, start = time.time(), time.perf_counter()
                done = _transfer(_readinto, fd, buffer, self.total_size, self.block_size)
                seconds = time.perf_counter() - start
            finally:
                os.close(fd)
        except OSError as exc:
            raise _IoFailure(f"read from {file} failed: {exc.strerror or exc}") from exc
        return started_at, max(seconds, 1e-9), direct, done

    def _open_for_read(self, file: str) -> tuple[int, bool]:
        aligned = self.block_size % _DIRECT_ALIGN == 0 and self.total_size % _DIRECT_ALIGN == 0
        if aligned and hasattr(os, "O_DIRECT"):
            try:
                return os.open(file, os.O_RDONLY | os.O_DIRECT), True
            except OSError as exc:
                if exc.errno != errno.EINVAL:  # EINVAL: this file system has no O_DIRECT
                    raise
        fd = os.open(file, os.O_RDONLY)
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)  # the data was flushed by _write
        return fd, False

    def _state_metrics(self, *, ok: bool, active: bool) -> list[Metric]:
        labels = self.labels()
        metrics = [Metric("lustre_ost_probe_ok", 1.0 if ok else 0.0, "", labels)]
        if self.ost is not None:
            metrics.append(Metric("lustre_ost_active", 1.0 if active else 0.0, "", labels))
        return metrics

    def _failed(self, payload: dict[str, Any], state: str, error: str, *, active: bool = True) -> Outcome:
        return Outcome(
            metrics=self._state_metrics(ok=False, active=active),
            payload=payload | {"state": state, "error": error},
            status=Status.FAILED,
            error=error,
        )


class _IoFailure(Exception):
    """A write or read of the probe file failed; the message says which and why."""


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _readinto(fd: int, view: memoryview) -> int:
    return os.readv(fd, [view])


def _transfer(op: Any, fd: int, buffer: mmap.mmap, total: int, block: int) -> int:
    """Move ``total`` bytes in ``block``-sized calls of ``op(fd, view)``; returns bytes moved.

    Short transfers are continued; a read that returns 0 (end of file) stops early.
    """
    view = memoryview(buffer)
    done = 0
    try:
        while done < total:
            count = op(fd, view[: min(block, total - done)])
            if count == 0:
                break
            done += count
    finally:
        view.release()
    return done
