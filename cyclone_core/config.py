"""Configuration of the master and the controllers: attrs classes with defaults, loaded from
TOML files (or Cyclone 2.x INI files) and command-line overrides.

A file may hold any of the top-level tables below; ``cyclone run`` reads all of them::

    [master]
    bind = "tcp://*:5678"
    journal = "/var/lib/cyclone/journal.sqlite"

    [controller]
    master = "tcp://head01:5678"
    workers = 8

    [log]
    file = "/var/log/cyclone/master.log"

    [generator]
    name = "benchmark"
    options = { count = 1000, task = "noop" }

    [sinks.sqlite]
    path = "results.sqlite"

Unknown keys are errors; every error names the file, the key and the problem in one line.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = (
    "Config",
    "ControllerSettings",
    "GeneratorSettings",
    "LogSettings",
    "MasterSettings",
)


@attrs.define(kw_only=True)
class MasterSettings:
    """The ``[master]`` table."""

    #: ZeroMQ endpoint the master binds; controllers connect to it.
    bind: str = "tcp://*:5678"
    #: SQLite journal; a master restarted on the same journal resumes.  Empty: in memory.
    journal: str = ""
    #: One master per pid file; a stale file (dead pid) is replaced.  Empty: no pid file.
    pid_file: str = ""
    #: Port of the Prometheus metrics endpoint; 0 turns it off.
    metrics_port: int = 0
    #: Seconds of silence after which a controller is declared lost and its tasks re-queued.
    controller_timeout: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    #: Seconds between heartbeats in each direction.
    heartbeat_interval: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    #: Default per-task timeout in seconds; 0 means none (a task type or spec may set its own).
    task_timeout: float = attrs.field(default=0.0, validator=attrs.validators.ge(0))
    #: Pending tasks the master holds at most: the generator is pulled only as this drains.
    window: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    #: Retries of a task that failed (raised); 0: a failure is final.
    max_failed_retries: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Retries of a task that crashed its worker or timed out, before it is quarantined.
    max_crash_retries: int = attrs.field(default=2, validator=attrs.validators.ge(0))
    #: Re-queues after losing a controller (infrastructure loss), before it is quarantined.
    max_lost_retries: int = attrs.field(default=5, validator=attrs.validators.ge(0))


@attrs.define(kw_only=True)
class ControllerSettings:
    """The ``[controller]`` table."""

    #: ZeroMQ endpoint of the master.
    master: str = "tcp://127.0.0.1:5678"
    #: Worker processes; 0 means one per CPU.
    workers: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Unique id; empty means ``<host>-<pid>``.
    id: str = ""
    #: One controller per pid file.  Empty: no pid file.
    pid_file: str = ""
    #: Seconds between heartbeats to the master.
    heartbeat_interval: float = attrs.field(default=2.0, validator=attrs.validators.gt(0))
    #: Seconds without a word from the master before the controller reconnects.
    master_timeout: float = attrs.field(default=20.0, validator=attrs.validators.gt(0))
    #: First reconnect delay in seconds; it doubles up to ``reconnect_max``.
    reconnect_interval: float = attrs.field(default=0.5, validator=attrs.validators.gt(0))
    reconnect_max: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    #: Give up after this many reconnects in a row without an answer; 0: never give up.
    max_reconnects: int = attrs.field(default=0, validator=attrs.validators.ge(0))
    #: Seconds a draining controller waits for running tasks before handing them back.
    drain_timeout: float = attrs.field(default=30.0, validator=attrs.validators.ge(0))


@attrs.define(kw_only=True)
class LogSettings:
    """The ``[log]`` table."""

    #: Log file; empty logs to stderr.
    file: str = ""
    level: str = attrs.field(default="info", validator=attrs.validators.in_(["debug", "info", "warning", "error"]))


@attrs.define(kw_only=True)
class GeneratorSettings:
    """The ``[generator]`` table: which registered generator, and its options."""

    name: str = "benchmark"
    options: dict[str, Any] = attrs.field(factory=dict)


@attrs.define(kw_only=True)
class Config:
    """A whole configuration file."""

    master: MasterSettings = attrs.field(factory=MasterSettings)
    controller: ControllerSettings = attrs.field(factory=ControllerSettings)
    log: LogSettings = attrs.field(factory=LogSettings)
    generator: GeneratorSettings = attrs.field(factory=GeneratorSettings)
    #: sink name -> its options; empty means the default ``sqlite`` sink.
    sinks: dict[str, dict[str, Any]] = attrs.field(factory=dict)
