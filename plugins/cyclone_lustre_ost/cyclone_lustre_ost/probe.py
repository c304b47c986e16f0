"""The ``lustre-ost-io`` task: measure one OST by writing and reading back a file pinned to it.

Steps (Lustre mode):

1. create an empty file whose only object is on OST N: ``lfs setstripe -c 1 -o N FILE`` where
   the client has it (Lustre 2.14 and later, ``strict_placement``), which fails when N cannot
   take the object and says why (inactive, full, read-only, drained); otherwise ``-i N``,
   which the MDS treats as a starting point and silently moves past such an OST;
2. ``lfs getstripe -y FILE`` confirms the placement, so a misplaced object is reported
   (``object placed on OST0003, not OST000a``) instead of measuring the wrong OST;
3. ``total_size`` bytes are written in ``block_size`` blocks (then ``fsync`` if asked), timed;
4. the file's range is dropped from the OSS cache (``lfs ladvise -a dontneed``): on ldiskfs
   the OSS read and writethrough caches would otherwise serve the file just written, and the
   read would measure the server's memory rather than its disks.  The payload's ``oss_cache``
   says whether that worked;
5. the data is read back in requests of at least 4 MiB, timed, bypassing the client's page
   cache: with ``O_DIRECT`` and a page-aligned buffer where the file system takes it, else
   (also when ``read()`` refuses ``O_DIRECT`` with EINVAL, as on clients with 64 KiB pages) after
   flushing the file and dropping its pages with ``posix_fadvise(POSIX_FADV_DONTNEED)``;
6. the file is deleted, always, also after a failure.

The ``lfs`` it runs, ``sudo``, and the directories it may probe are the controller's
(:class:`~cyclone_lustre_ost.local.LustreLocal`, ``[controller.local.lustre]``): a probe whose
``path`` is outside the controller's ``roots`` is refused before anything is touched.

An OST in an administrative state (``drained``: takes no new objects on purpose; ``retired``:
deactivated for good) is not probed: the result is ``ok`` with that state, so no alarm fires
every round.  In plain mode (no ``ost``) steps 1, 2 and 4 are skipped and the directory itself
is measured.
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
from cyclone_lustre_ost.discovery import ADMIN_STATES
from cyclone_lustre_ost.local import SECTION, LustreLocal
from cyclone_lustre_ost.lustre import PLACEMENT_ERRORS, LustreError, LustreTools, ost_label, setstripe_reason
from cyclone_lustre_ost.metrics import PROBE_STATUS, target_labels
from cyclone_lustre_ost.options import as_size, one_of, positive

__all__ = ("LustreOstIoTask", "read_back")

_PAGE = mmap.PAGESIZE
#: Reads are issued in requests of at least this size: Lustre's RPCs carry up to 4 MiB, and
#: small O_DIRECT reads measure round trips rather than the OST.
MIN_READ_REQUEST = 4 << 20
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
    :param fsname: file system name, for the labels (default: the path in plain mode).
    :param active: ``False`` when discovery found the OST unusable: the task reports it as
        failed without touching the file system, so every selected OST gets a row.
    :param inactive_reason: why discovery found it unusable, as the tool said it.
    :param admin_state: ``drained`` or ``retired`` for an OST taken out of service on purpose:
        reported as such (status ok), not probed.
    :param strict_placement: create the file with ``lfs setstripe -o`` (Lustre 2.14+), which
        fails with the reason instead of placing the object elsewhere.
    :param total_size: bytes written and read back.
    :param block_size: bytes per write call (reads use at least :data:`MIN_READ_REQUEST`).
    :param fsync: include an ``fsync`` in the write time; without it the write measures how fast
        the client absorbs the data (the file is still flushed, untimed, before the read).
    :param slow_threshold: seconds; a write or read slower than this is flagged.
    :param tool_timeout: seconds each ``lfs`` call may take.

    The ``lfs`` program and ``sudo`` come from the controller's ``[controller.local.lustre]``,
    and ``path`` must be under its ``roots``.
    """

    name: ClassVar[str] = "lustre-ost-io"
    local_section: ClassVar[str] = SECTION
    local_settings: ClassVar[type[Any] | None] = LustreLocal

    path: str
    ost: int | None = attrs.field(default=None, validator=attrs.validators.optional(attrs.validators.ge(0)))
    fsname: str = ""
    active: bool = True
    inactive_reason: str = ""
    admin_state: str = attrs.field(default="", validator=one_of(ADMIN_STATES))
    strict_placement: bool = False
    total_size: ByteSize = attrs.field(default=_DEFAULT_TOTAL, converter=as_size, validator=positive)
    block_size: ByteSize = attrs.field(default=_DEFAULT_BLOCK, converter=as_size, validator=positive)
    fsync: bool = True
    slow_threshold: float | None = attrs.field(default=None, validator=positive)
    tool_timeout: float = attrs.field(default=60.0, validator=positive)

    @property
    def label(self) -> str:
        """``OST000a`` in Lustre mode, else ``dir``."""
        return ost_label(self.ost) if self.ost is not None else "dir"

    def labels(self) -> dict[str, str]:
        """The labels of every metric: ``fs``, plus the exporters' ``component="ost"`` and
        ``target="<fs>-OST000a"`` in Lustre mode."""
        if self.ost is None:
            return {"fs": self.fsname or self.path}
        return target_labels(self.fsname, "ost", self.ost)

    def execute(self, ctx: TaskContext) -> Outcome:
        """Run the probe; see the module documentation for the steps."""
        payload: dict[str, Any] = {"mode": "plain" if self.ost is None else "lustre", **self.labels()}
        if self.ost is not None:
            payload |= {"ost": self.label, "index": self.ost}
        local = LustreLocal.of(ctx)
        refusal = local.refusal(self.path)
        if refusal is not None:
            return self._failed(payload, "refused", refusal)
        tools = local.tools(self.tool_timeout)
        if self.admin_state:
            return self._administrative(payload, self.admin_state, f"{self.label} is {self.admin_state}")
        if not self.active:
            reason = f": {self.inactive_reason}" if self.inactive_reason else ""
            return self._failed(payload, "inactive", f"{self.label} is inactive{reason}", active=False)
        file = os.path.join(self.path, _probe_file_name(self.label, ctx.task_id))
        payload["file"] = file
        try:
            if self.ost is not None:
                problem = self._place(tools, file, payload)
                if problem is not None:
                    return problem
            return self._measure(tools, file, payload)
        finally:
            try:
                os.unlink(file)
            except FileNotFoundError:
                pass
            except OSError as exc:  # the result still stands; the leftover is worth a log line
                ctx.log.warning("cannot delete probe file %s: %s", file, exc.strerror)

    # -- steps --------------------------------------------------------------------------

    def _place(self, tools: LustreTools, file: str, payload: dict[str, Any]) -> Outcome | None:
        assert self.ost is not None
        payload["placement"] = "lfs setstripe -o" if self.strict_placement else "lfs setstripe -i"
        try:
            tools.setstripe(file, self.ost, strict=self.strict_placement)
        except LustreError as exc:
            state = PLACEMENT_ERRORS.get(exc.returncode or 0) if self.strict_placement else None
            if state is None:
                return self._failed(payload, "lustre_error", str(exc))
            reason = setstripe_reason(exc)
            if state == "drained":  # max_create_count=0: taken out of service on purpose
                return self._administrative(payload, state, f"{self.label} takes no new objects ({reason})")
            return self._failed(payload, state, f"{self.label} refused the object: {reason}")
        try:
            placed = tools.stripe_index(file)
        except LustreError as exc:
            return self._failed(payload, "lustre_error", str(exc))
        if placed != self.ost:
            where = ost_label(placed) if placed is not None else "no OST"
            payload["placed_on"] = where
            return self._failed(payload, "misplaced", f"object placed on {where}, not {self.label}")
        return None

    def _measure(self, tools: LustreTools, file: str, payload: dict[str, Any]) -> Outcome:
        request = max(self.block_size, MIN_READ_REQUEST)
        buffer = mmap.mmap(-1, _round_up(max(self.block_size, request), _PAGE))  # page-aligned, as O_DIRECT wants
        try:
            buffer.write(b"\xa5" * len(buffer))
            with memoryview(buffer) as view:
                write_at, write_seconds = self._write(file, view)
                payload["oss_cache"] = self._drop_oss_cache(tools, file)
                read = read_back(file, self.total_size, request, view)
        except _IoFailure as exc:
            return self._failed(payload, "io_error", str(exc))
        finally:
            buffer.close()
        if read.bytes != self.total_size:
            return self._failed(payload, "io_error", f"read back {read.bytes} bytes of {self.total_size} from {file}")
        slow = self.slow_threshold is not None and max(write_seconds, read.seconds) > self.slow_threshold
        payload |= {
            "state": "ok",
            "probe_bytes": int(self.total_size),
            "block_size": int(self.block_size),
            "read_request_bytes": int(request),
            "fsync": self.fsync,
            "direct_io": read.direct,
            "write_timestamp": write_at,
            "read_timestamp": read.started_at,
            "write_seconds": write_seconds,
            "read_seconds": read.seconds,
            "write_bytes_per_second": self.total_size / write_seconds,
            "read_bytes_per_second": self.total_size / read.seconds,
        }
        if read.direct_error:
            payload["direct_io_error"] = read.direct_error
        labels = self.labels()
        metrics = [
            Metric(
                "cyclone_lustre_ost_write_bytes_per_second",
                payload["write_bytes_per_second"],
                "bytes/s",
                labels,
                write_at,
            ),
            Metric(
                "cyclone_lustre_ost_read_bytes_per_second",
                payload["read_bytes_per_second"],
                "bytes/s",
                labels,
                read.started_at,
            ),
            Metric("cyclone_lustre_ost_write_seconds", write_seconds, "s", labels, write_at),
            Metric("cyclone_lustre_ost_read_seconds", read.seconds, "s", labels, read.started_at),
            Metric("cyclone_lustre_ost_probe_bytes", float(self.total_size), "bytes", labels),
            *self._state_metrics("ok", active=True),
        ]
        if self.slow_threshold is not None:
            payload |= {"slow": slow, "slow_threshold": self.slow_threshold}
            metrics.append(Metric("cyclone_lustre_ost_slow", 1.0 if slow else 0.0, "", labels))
        return Outcome(metrics=metrics, payload=payload)

    def _write(self, file: str, buffer: memoryview) -> tuple[float, float]:
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
                    os.fsync(fd)  # untimed: the read below must find nothing dirty in any cache
            finally:
                os.close(fd)
        except OSError as exc:
            raise _IoFailure(f"write to {file} failed: {exc.strerror or exc}") from exc
        return started_at, max(seconds, 1e-9)

    def _drop_oss_cache(self, tools: LustreTools, file: str) -> str:
        """Drop the file from the OSS read cache; say what happened, for the payload."""
        if self.ost is None:
            return "none: not on Lustre"
        try:
            tools.drop_oss_cache(file, self.total_size)
        except LustreError as exc:
            return f"not dropped: {exc}"
        return "dropped: lfs ladvise -a dontneed"

    def _state_metrics(self, state: str, *, active: bool) -> list[Metric]:
        labels = self.labels()
        metrics = [
            Metric("cyclone_lustre_ost_probe_status", PROBE_STATUS[state], "", labels),
            Metric("cyclone_lustre_ost_probe_timestamp_seconds", time.time(), "s", labels),
        ]
        if self.ost is not None:
            metrics.append(Metric("cyclone_lustre_ost_active", 1.0 if active else 0.0, "", labels))
        return metrics

    def _failed(self, payload: dict[str, Any], state: str, error: str, *, active: bool = True) -> Outcome:
        return Outcome(
            metrics=self._state_metrics("failed", active=active),
            payload=payload | {"state": state, "error": error},
            status=Status.FAILED,
            error=error,
        )

    def _administrative(self, payload: dict[str, Any], state: str, detail: str) -> Outcome:
        """A drained or retired OST: its own state and metric value, status ok (no alarm)."""
        return Outcome(
            metrics=self._state_metrics(state, active=state != "retired"),
            payload=payload | {"state": state, "detail": detail},
        )


class _IoFailure(Exception):
    """A write or read of the probe file failed; the message says which and why."""


@attrs.frozen
class ReadBack:
    """A timed read of a whole file.

    :param started_at: epoch seconds when the timed read started.
    :param seconds: how long it took.
    :param bytes: bytes read.
    :param direct: whether it bypassed the client's page cache with ``O_DIRECT``.
    :param direct_error: why ``O_DIRECT`` was given up, when it was.
    """

    started_at: float
    seconds: float
    bytes: int
    direct: bool
    direct_error: str = ""


def read_back(file: str, total: int, request: int, buffer: memoryview) -> ReadBack:
    """Read ``file`` (``total`` bytes) in ``request``-sized calls into ``buffer``, timed,
    without the client's page cache.

    ``O_DIRECT`` is used when the sizes are multiples of the page size.  A file system may
    still refuse it, at ``open()`` or only at the first ``read()`` (EINVAL: a client with 64 KiB
    pages and a 4 KiB-aligned request, or a misaligned buffer); the read then starts over
    through the page cache, after dropping the file's pages (the writer flushed them, and the
    kernel drops only clean pages).
    """
    direct_error = ""
    if total % _PAGE == 0 and request % _PAGE == 0 and hasattr(os, "O_DIRECT"):
        try:
            return _timed_read(file, total, request, buffer, os.O_DIRECT)
        except _DirectRefused as exc:
            direct_error = str(exc)
    return attrs.evolve(_timed_read(file, total, request, buffer, 0), direct_error=direct_error)


class _DirectRefused(Exception):
    """``O_DIRECT`` was refused with EINVAL; the message says where."""


def _timed_read(file: str, total: int, request: int, buffer: memoryview, direct: int) -> ReadBack:
    try:
        fd = os.open(file, os.O_RDONLY | direct)
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:
            raise _DirectRefused("open() with O_DIRECT: EINVAL") from None
        raise _IoFailure(f"read from {file} failed: {exc.strerror or exc}") from exc
    try:
        if not direct:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        started_at, start = time.time(), time.perf_counter()
        done = _transfer(_readinto, fd, buffer, total, request)
        seconds = time.perf_counter() - start
    except OSError as exc:
        if direct and exc.errno == errno.EINVAL:
            raise _DirectRefused("read() with O_DIRECT: EINVAL") from None
        raise _IoFailure(f"read from {file} failed: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)
    return ReadBack(started_at=started_at, seconds=max(seconds, 1e-9), bytes=done, direct=bool(direct))


def _round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def _readinto(fd: int, view: memoryview) -> int:
    return os.readv(fd, [view])


def _transfer(op: Any, fd: int, buffer: memoryview, total: int, block: int) -> int:
    """Move ``total`` bytes in ``block``-sized calls of ``op(fd, view)``; returns bytes moved.

    Short transfers are continued; a read that returns 0 (end of file) stops early.
    """
    done = 0
    while done < total:
        count = op(fd, buffer[: min(block, total - done)])
        if count == 0:
            break
        done += count
    return done
