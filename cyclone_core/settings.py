"""The engine's plain settings: the ``[master]`` and ``[controller]`` tables.

Plain attrs classes with defaults and range checks, nothing else: the engine's pure modules
(scheduler, master core, controller session) take them without importing the configuration
loader, which also loads plugins.  :mod:`cyclone_core.config` reads them from files and the
command line; docs/configuration.md describes every key.
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ("ControllerSettings", "MasterSettings")


@attrs.define(kw_only=True)
class MasterSettings:
    """The ``[master]`` table."""

    #: ZeroMQ endpoint the master binds; controllers connect to it.
    bind: str = "tcp://*:5678"
    #: SQLite journal; a master restarted on the same journal resumes.  Empty: a journal in a
    #: temporary directory, removed at the end (kept, and named, if results are left undelivered).
    journal: str = ""
    #: Free space (MB) on the journal's file system below which the master warns, once per
    #: crossing; 0: never.  When the disk is full, the master stops dispatching until it is not.
    journal_min_free_mb: float = attrs.field(default=100.0, validator=attrs.validators.ge(0))
    #: One master per pid file; a stale file (dead pid) is replaced.  Empty: no pid file.
    pid_file: str = ""
    #: Port of the Prometheus metrics endpoint; 0 turns it off.
    metrics_port: int = 0
    #: Address the metrics endpoint listens on: loopback unless set (``"0.0.0.0"``: every
    #: interface, for a Prometheus on another host).
    metrics_bind: str = "127.0.0.1"
    #: Port of the web dashboard (docs/dashboard.md); 0 turns it off.
    http_port: int = attrs.field(default=0, validator=[attrs.validators.ge(0), attrs.validators.le(65535)])
    #: Address the dashboard listens on: loopback unless set.
    http_bind: str = "127.0.0.1"
    #: A file holding the dashboard's token (one line); empty: a random token, printed at start.
    http_token_file: str = ""
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
    #: Key directory (``master.secret``, ``allowed.toml``, ``tokens.toml``); empty: ``$CYCLONE_KEYS``
    #: or ``~/.config/cyclone/keys``.  ``cyclone keys init`` creates it.
    keys: str = ""
    #: Plaintext, no keys: anyone who reaches the port can register and send results.  Only for
    #: a network that nobody else can reach; the master says so in its log.
    insecure: bool = False
    #: Controllers registered at once, at most.
    max_controllers: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    #: Controllers registered at once under one key, and under one shared group key.
    max_controllers_per_key: int = attrs.field(default=16, validator=attrs.validators.gt(0))
    max_controllers_per_group_key: int = attrs.field(default=10_000, validator=attrs.validators.gt(0))
    #: Tasks one controller may hold (leased and credit) at most, whatever credit it grants.
    max_credit: int = attrs.field(default=4096, validator=attrs.validators.gt(0))
    #: Hellos per minute one key may send (a burst of 5 is allowed); more are ignored, so a
    #: controller that cycles is held back.
    hellos_per_minute: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))


@attrs.define(kw_only=True)
class ControllerSettings:
    """The ``[controller]`` table."""

    #: ZeroMQ endpoint of the master.
    master: str = "tcp://127.0.0.1:5678"
    #: Key directory (``controller.secret``, the pinned ``master.public``); empty: ``$CYCLONE_KEYS``
    #: or ``~/.config/cyclone/keys``.
    keys: str = ""
    #: A join token (``cyclone keys token`` on the master): enroll this controller's key with it,
    #: once; the key directory remembers that it did.
    token: str = ""
    #: Plaintext, no keys: only for a master that is itself ``insecure``, on a network nobody
    #: else can reach; the controller says so in its log.
    insecure: bool = False
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
    #: After its master's run ends (Shutdown), wait for the next master instead of exiting: a
    #: long-lived controller (systemd, a Slurm job) that serves run after run.
    stay: bool = False
    #: Registered task types this controller runs and announces; empty: every installed one.
    #: A dispatched task of another type is refused.
    task_types: list[str] = attrs.field(factory=list)
    #: The ``[controller.local.<section>]`` tables: settings only this controller decides
    #: (programs, sudo, path roots), read by the task types that name the section.
    local: dict[str, dict[str, Any]] = attrs.field(factory=dict)
