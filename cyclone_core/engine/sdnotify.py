"""systemd's notification protocol (``sd_notify``), for units of ``Type=notify``.

A daemon started by systemd with ``Type=notify`` finds a datagram socket in ``NOTIFY_SOCKET``
(a path, or ``@name`` for an abstract socket) and tells systemd through it, one datagram of
``KEY=VALUE`` lines at a time, that it is ready (``READY=1``), what it is doing (``STATUS=``),
that it is stopping (``STOPPING=1``) and that its main loop is alive (``WATCHDOG=1``, expected
every ``WATCHDOG_USEC`` microseconds when the unit sets ``WatchdogSec=``).

:class:`SystemdNotifier` speaks it from the daemon's main loop: :meth:`~SystemdNotifier.tick`
sends the watchdog's ping at half the interval and the status line at most once a second, so a
loop that hangs stops the pings and systemd restarts the daemon.  Without ``NOTIFY_SOCKET``
every method does nothing; a send that fails is logged once and never raises into the daemon.
"""

from __future__ import annotations

import logging
import math
import os
import socket
import time
from collections.abc import Callable, MutableMapping

__all__ = ("SystemdNotifier",)

log = logging.getLogger("cyclone.sdnotify")

#: Seconds between two STATUS= updates at least.
STATUS_EVERY = 1.0
#: The variables systemd sets for the notification protocol.
_VARIABLES = ("NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID")


class SystemdNotifier:
    """Notifications to the service manager named by ``environ`` (default: the process's).

    :param environ: where ``NOTIFY_SOCKET``, ``WATCHDOG_USEC`` and ``WATCHDOG_PID`` are read.
    :param unset: remove those variables from ``environ`` once read (as ``sd_notify``'s
        ``unset_environment`` does), so that worker processes and the commands of tasks do not
        inherit them and talk to systemd in the daemon's name.
    :param pid: this process's pid (default: :func:`os.getpid`).  A ``WATCHDOG_PID`` naming
        another process means the watchdog is not ours to feed; a ``SYSTEMD_EXEC_PID`` naming
        another process (systemd started an ancestor: a test runner, say) means none of the
        variables are ours, and they are left alone.
    """

    def __init__(
        self, environ: MutableMapping[str, str] | None = None, *, unset: bool = False, pid: int | None = None
    ) -> None:
        env = os.environ if environ is None else environ
        pid = os.getpid() if pid is None else pid
        exec_pid = env.get("SYSTEMD_EXEC_PID", "")
        ours = not exec_pid or exec_pid == str(pid)
        values = {name: env.get(name, "") if ours else "" for name in _VARIABLES}
        if unset and ours:
            for name in _VARIABLES:
                env.pop(name, None)
        self._address: str | None = None
        self._sock: socket.socket | None = None
        self._failed = False
        self._status = ""
        self._next_status = 0.0
        self._stopping = False
        #: Seconds between two watchdog pings (half of ``WATCHDOG_USEC``), or ``None``.
        self.watchdog_interval: float | None = None
        self._next_ping = math.inf
        address = values["NOTIFY_SOCKET"]
        if not address:
            return
        if address[0] == "@":
            self._address = "\0" + address[1:]
        elif address[0] == "/":
            self._address = address
        else:
            log.warning("NOTIFY_SOCKET=%s is not a socket path or @name: systemd is not notified", address)
            return
        self.watchdog_interval = _watchdog_interval(values["WATCHDOG_USEC"], values["WATCHDOG_PID"], pid)

    @property
    def enabled(self) -> bool:
        """Whether a service manager listens (``NOTIFY_SOCKET`` was set and usable)."""
        return self._address is not None

    def send(self, *lines: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; whether it was sent (a failure is logged
        once, never raised)."""
        if self._address is None:
            return False
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
                self._sock.setblocking(False)  # a full queue drops a message, never stalls the loop
            self._sock.sendto("\n".join(lines).encode(), self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                shown = self._address.replace("\0", "@", 1)
                log.warning("cannot notify systemd through %s: %s (said once)", shown, exc.strerror or exc)
            return False
        return True

    def ready(self, status: str = "", now: float | None = None) -> None:
        """``READY=1``, with a first status line; arms the watchdog's pings from ``now``."""
        lines = ["READY=1"]
        if status:
            lines.append(self._status_line(status, now))
        if self.watchdog_interval is not None:
            lines.append("WATCHDOG=1")
            self._next_ping = (now if now is not None else time.monotonic()) + self.watchdog_interval
        self.send(*lines)

    def tick(self, now: float, status: Callable[[], str] | None = None, *, stopping: bool = False) -> None:
        """Call from every turn of the main loop: the watchdog's ping when due, ``STOPPING=1``
        once ``stopping`` turns true, and ``status()`` as ``STATUS=`` at most once a second
        when it changed."""
        if self._address is None:
            return
        lines = []
        if now >= self._next_ping:
            lines.append("WATCHDOG=1")
            assert self.watchdog_interval is not None
            self._next_ping = now + self.watchdog_interval
        if stopping and not self._stopping:
            self._stopping = True
            lines.append("STOPPING=1")
            self._next_status = 0.0  # the new state shows at once
        if status is not None and now >= self._next_status:
            text = status()
            if text != self._status:
                lines.append(self._status_line(text, now))
        if lines:
            self.send(*lines)

    def deadline(self) -> float:
        """When :meth:`tick` must run next at the latest (monotonic), for a loop that sleeps."""
        return self._next_ping

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def _status_line(self, text: str, now: float | None) -> str:
        self._status = text
        self._next_status = (now if now is not None else time.monotonic()) + STATUS_EVERY
        return "STATUS=" + " ".join(text.split())


def _watchdog_interval(usec: str, watchdog_pid: str, pid: int) -> float | None:
    """Seconds between pings: half of ``WATCHDOG_USEC``, if it is set, valid and ours."""
    if not usec:
        return None
    if watchdog_pid and watchdog_pid != str(pid):
        log.debug("WATCHDOG_PID=%s is another process: its watchdog is not fed from here", watchdog_pid)
        return None
    try:
        interval = int(usec)
    except ValueError:
        interval = 0
    if interval <= 0:
        log.warning("WATCHDOG_USEC=%s is not a positive number of microseconds: no watchdog pings", usec)
        return None
    return interval / 2e6
