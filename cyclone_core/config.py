"""Configuration of the master and the controllers: attrs classes with defaults, loaded from
TOML files (or Cyclone 2.x INI files) and command-line overrides.

A file may hold any of the top-level tables below; ``cyclone run`` reads all of them::

    [master]
    bind = "tcp://*:5678"
    journal = "/var/lib/cyclone/journal.sqlite"

    [controller]
    master = "tcp://head01:5678"
    workers = 8
    task_types = ["lustre-ost-io"]

    [controller.local.lustre]
    lfs = "/usr/bin/lfs"
    roots = ["/lustre/fs1"]

    [log]
    file = "/var/log/cyclone/master.log"

    [generator]
    name = "benchmark"
    options = { count = 1000, task = "noop" }

    [sinks.sqlite]
    path = "results.sqlite"

Unknown keys are errors; every error names the file, the key and the problem in one line.
:func:`load_config` reads a file, :func:`apply_overrides` adds ``-g``/``-s`` command-line
options, and :func:`build_generator` / :func:`build_sinks` turn the result into the registered
plugin objects; :func:`controller_task_types` says which task types a controller runs, having
checked their ``[controller.local.*]`` tables.  docs/configuration.md describes every key and
the Cyclone 2.x INI mapping.
"""

from __future__ import annotations

import configparser
import logging
import socket
import tomllib
import typing
from collections.abc import Callable, Mapping, MutableMapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from cyclone_core.convert import field_problem, parse_scalar, structure
from cyclone_core.engine.execution import local_settings
from cyclone_core.errors import ConfigError, CycloneError, UsageError
from cyclone_core.model import ResultSink, TaskGenerator
from cyclone_core.plugins import get_plugins
from cyclone_core.settings import ControllerSettings, MasterSettings

__all__ = (
    "DEFAULT_SINK",
    "Config",
    "ControllerSettings",
    "GeneratorSettings",
    "LogSettings",
    "MasterSettings",
    "apply_overrides",
    "build_generator",
    "build_sinks",
    "check_endpoint",
    "controller_task_types",
    "load_config",
    "sink_options",
)

log = logging.getLogger("cyclone.config")

#: The sink results go to when a configuration names none.
DEFAULT_SINK = "sqlite"


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


# -- loading -------------------------------------------------------------------------------

_TABLES: dict[str, type] = {
    "master": MasterSettings,
    "controller": ControllerSettings,
    "log": LogSettings,
    "generator": GeneratorSettings,
}
_INI_SUFFIXES = (".conf", ".ini", ".cfg")


def load_config(path: str | Path) -> Config:
    """Read a TOML file, or a Cyclone 2.x INI file (``.conf``, ``.ini``, ``.cfg``).

    Every problem raises :class:`ConfigError` with one line naming the file, the key and what
    is wrong, e.g. ``master.toml: master.window: expected a whole number, got 'ten'``.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".toml":
        return _load_toml(path)
    if suffix in _INI_SUFFIXES:
        return _load_ini(path)
    raise ConfigError(
        f"{path}: unknown file type {suffix!r}: use .toml, or {'/'.join(_INI_SUFFIXES)} for a Cyclone 2.x file"
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a UTF-8 text file") from None


def _load_toml(path: Path) -> Config:
    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    _check_keys(data, str(path))
    config = structure(data, Config, where=str(path))
    for key in config.generator.options:
        _check_option(f"{path}: generator.options.{key}", "generator", config.generator.name, key)
    for sink, options in config.sinks.items():
        for key in options:
            _check_option(f"{path}: sinks.{sink}.{key}", "sink", sink, key)
    if "controller" in data:
        controller_task_types(config.controller, where=str(path))
    return config


def _check_keys(data: Mapping[str, Any], where: str) -> None:
    # cattrs reports unknown keys only as "extra fields found"; name the key and the known ones.
    known_tables = [f.name for f in attrs.fields(Config)]
    for table, value in data.items():
        if table not in known_tables:
            raise ConfigError(f"{where}: {table}: unknown key (known: {', '.join(known_tables)})")
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: {table}: expected a table, got {value!r}")
        if table in _TABLES:
            fields = attrs.fields_dict(_TABLES[table])
            for key in value:
                if key not in fields:
                    raise ConfigError(f"{where}: {table}.{key}: unknown key (known: {', '.join(fields)})")


def _check_option(what: str, kind: str, name: str, key: str) -> None:
    """Raise :class:`ConfigError` ``WHAT: unknown option of KIND 'NAME' (known: ...)``
    unless ``key`` is an option of the installed generator or sink ``name`` (one that is not
    installed is reported when it is built: a controller need not have the master's plugins)."""
    plugins = get_plugins()
    cls = (plugins.generators() if kind == "generator" else plugins.sinks()).get(name)
    if cls is None:
        return
    known = [field.name for field in attrs.fields(cls) if field.init]
    if key not in known:
        raise ConfigError(f"{what}: unknown option of {kind} '{name}' (known: {', '.join(known)})")


def controller_task_types(settings: ControllerSettings, *, where: str = "") -> list[str]:
    """The task types a controller with ``settings`` runs and announces, sorted:
    ``controller.task_types``, or every installed type when that is empty, less the types its
    local settings leave off (:meth:`~cyclone_core.model.Task.off_because`: ``command``
    without allowed executables).

    Checks on the way that every name is an installed task type, that every
    ``[controller.local.<section>]`` table is read by an installed task type, and that the
    local settings of every type it runs are valid, so that a mistake is one
    :class:`ConfigError` line when the controller starts (prefixed with ``where``, the file).
    """
    prefix = f"{where}: " if where else ""
    installed = get_plugins().task_types()
    for name in settings.task_types:
        if name not in installed:
            known = ", ".join(sorted(installed)) or "none"
            raise ConfigError(f"{prefix}controller.task_types: unknown task type '{name}' (installed: {known})")
    tables = {cls.local_table() for cls in installed.values()}
    for section in settings.local:
        if section not in tables:
            known = ", ".join(sorted(tables))
            raise ConfigError(
                f"{prefix}controller.local.{section}: no installed task type reads this table (tables read: {known})"
            )
    from cyclone_core.engine.curve import private_ipc  # noqa: PLC0415  (keeps zmq out of config loading)

    plaintext = settings.insecure and not private_ipc(settings.master)
    names = []
    for name in sorted(set(settings.task_types or installed)):
        local = local_settings(installed[name], settings.local, where=f"{prefix}controller.local")
        off = installed[name].off_because(local)
        if off is None and plaintext and installed[name].needs_keys:
            off = f"task type '{name}' needs keys: an insecure controller would run it for anyone"
        if off is None:
            names.append(name)
        elif name in settings.task_types:  # asked for by name, yet off: say why
            raise ConfigError(f"{prefix}controller.task_types: {off}")
    return names


# -- Cyclone 2.x INI files -----------------------------------------------------------------

# (section, key) of a 2.x file -> (table, field) here; None: accepted and ignored (logged).
# [comm] target/port and [task_generator] are translated by code of their own.
_INI_COMMON: dict[tuple[str, str], tuple[str, str] | None] = {
    ("log", "filename"): ("log", "file"),
    ("comm", "poll_timeout"): None,
}
_INI_MASTER: dict[tuple[str, str], tuple[str, str] | None] = {
    **_INI_COMMON,
    ("control", "pid_file"): ("master", "pid_file"),
    ("control", "controller_timeout"): ("master", "controller_timeout"),
    ("control", "task_resend_timeout"): ("master", "task_timeout"),
    ("control", "controller_wait_duration"): None,
}
_INI_CONTROLLER: dict[tuple[str, str], tuple[str, str] | None] = {
    **_INI_COMMON,
    ("control", "pid_file"): ("controller", "pid_file"),
    ("control", "request_retry_wait_duration"): ("controller", "reconnect_interval"),
    ("control", "max_num_request_retries"): ("controller", "max_reconnects"),
    ("processing", "worker_count"): ("controller", "workers"),
}
_ENDPOINT_KEYS = ("target", "port")
_GENERATOR_KEYS = ("class", "config_file", "module", "name")
_DEFAULT_PORT = 5678


def _read_ini(path: Path) -> dict[str, dict[str, str]]:
    """The sections of an INI file as ``{section: {key: raw value}}`` (no interpolation)."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(_read_text(path), source=str(path))
    except configparser.Error as exc:
        raise ConfigError(f"{path}: invalid INI file: {' '.join(exc.message.split())}") from None
    return {section: dict(parser.items(section, raw=True)) for section in parser.sections()}


def _load_ini(path: Path) -> Config:
    where = str(path)
    sections = _read_ini(path)
    # 2.x used one file layout per daemon; only a controller's has [processing].
    role = "controller" if "processing" in sections else "master"
    mapping = _INI_CONTROLLER if role == "controller" else _INI_MASTER
    known_sections = {section for section, _ in mapping} | {"comm"}
    if role == "master":
        known_sections.add("task_generator")
    tables: dict[str, dict[str, Any]] = {"master": {}, "controller": {}, "log": {}}
    for section, values in sections.items():
        if section not in known_sections:
            known = ", ".join(sorted(known_sections))
            raise ConfigError(f"{where}: [{section}]: not a section of a Cyclone 2.x {role} file (known: {known})")
        for key, raw in values.items():
            if section == "task_generator" or (section == "comm" and key in _ENDPOINT_KEYS):
                continue
            if (section, key) not in mapping:
                raise ConfigError(f"{where}: {section}.{key}: unknown key in a Cyclone 2.x {role} file")
            target = mapping[(section, key)]
            if target is None:
                log.info("%s: %s.%s is ignored: it has no meaning in this version of Cyclone", where, section, key)
                continue
            table, field = target
            tables[table][field] = _setting(raw, _TABLES[table], field, f"{where}: {section}.{key}")
    comm = sections.get("comm", {})
    if any(key in comm for key in _ENDPOINT_KEYS):
        tables[role]["bind" if role == "master" else "master"] = _endpoint(comm, role, where)
    generator = GeneratorSettings()
    if "task_generator" in sections:
        generator = _ini_generator(sections["task_generator"], path)
    return Config(
        master=MasterSettings(**tables["master"]),
        controller=ControllerSettings(**tables["controller"]),
        log=LogSettings(**tables["log"]),
        generator=generator,
    )


def _setting(raw: str, cls: type, name: str, where: str) -> Any:
    """Convert one INI value to the type of field ``name`` of ``cls`` and run its validator."""
    field = attrs.fields_dict(cls)[name]
    value = structure(raw, typing.get_type_hints(cls)[name], where=where)
    if field.validator is not None:
        try:
            field.validator(None, field, value)
        except ValueError as exc:
            # attrs validators raise ValueError(message, attribute, ...): keep the message.
            raise ConfigError(field_problem(where, exc.args[0])) from None
    return value


def _endpoint(comm: Mapping[str, str], role: str, where: str) -> str:
    host = comm.get("target", "").strip() or ("*" if role == "master" else "127.0.0.1")
    if role == "controller" and host == "*":
        raise ConfigError(f"{where}: comm.target: a controller needs the master's host name or address, not '*'")
    raw_port = comm.get("port", str(_DEFAULT_PORT)).strip()
    # 2.x accepted 1024..65534; 65535 is a valid port too.
    if not raw_port.isdigit() or not 1024 <= int(raw_port) <= 65535:
        raise ConfigError(f"{where}: comm.port: expected a port from 1024 to 65535, got {raw_port!r}")
    return f"tcp://{host}:{int(raw_port)}"


#: ZeroMQ's transports; ``tcp`` endpoints are checked further.
_TRANSPORTS = ("tcp", "ipc", "inproc", "pgm", "epgm", "tipc", "vmci", "ws", "wss")


def check_endpoint(endpoint: str, what: str, *, bind: bool = False) -> None:
    """Raise :class:`UsageError` naming ``what`` (``--master``, ``master.bind``, ...) unless
    ``endpoint`` is a ZeroMQ endpoint whose ``tcp`` host resolves and whose port is a port.

    :param bind: the endpoint is bound: its host may be ``*`` or an interface name, its port
        ``*`` or 0 (any free port).
    """
    transport, sep, address = endpoint.partition("://")
    if not sep or transport not in _TRANSPORTS:
        raise UsageError(f"{what} {endpoint!r}: expected TRANSPORT://ADDRESS, e.g. tcp://head01:5678")
    if transport != "tcp":
        return
    host, sep, port = address.rpartition(":")
    host = host.rpartition(";")[2].strip("[]")  # after a source address; IPv6 in brackets
    if not sep or not host:
        raise UsageError(f"{what} {endpoint!r}: expected tcp://HOST:PORT")
    lowest = 0 if bind else 1
    if not (bind and port == "*") and not (port.isdigit() and lowest <= int(port) <= 65535):
        raise UsageError(f"{what} {endpoint!r}: the port must be a number from {lowest} to 65535")
    if bind and (host == "*" or host in {name for _, name in socket.if_nameindex()}):
        return
    try:
        socket.getaddrinfo(host, None)
    except (OSError, UnicodeError):
        raise UsageError(f"{what} {endpoint!r}: cannot resolve the host '{host}'") from None


def _ini_generator(section: Mapping[str, str], path: Path) -> GeneratorSettings:
    """``[task_generator]``: pick a registered generator by ``name`` or by its 2.x ``class``.

    ``module`` is accepted and never imported: generators are addressed by registered name.
    """
    where = str(path)
    for key in section:
        if key not in _GENERATOR_KEYS:
            raise ConfigError(f"{where}: task_generator.{key}: unknown key (known: {', '.join(_GENERATOR_KEYS)})")
    name, legacy = section.get("name", "").strip(), section.get("class", "").strip()
    if name:
        try:
            cls = get_plugins().generator(name)
        except CycloneError as exc:
            raise ConfigError(f"{where}: task_generator.name: {exc}") from None
    elif legacy:
        cls = _legacy_generator(legacy, f"{where}: task_generator.class")
    else:
        raise ConfigError(f"{where}: task_generator: set class (a Cyclone 2.x generator class) or name")
    sections: dict[str, dict[str, str]] = {}
    config_file = section.get("config_file", "").strip()
    if config_file:
        legacy_path = path.parent / config_file  # an absolute config_file stays as it is
        sections = _read_ini(legacy_path)
        where = str(legacy_path)
    try:
        options = cls.legacy_options(sections)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(f"{where}: {exc.args[0] if exc.args else type(exc).__name__}") from None
    return GeneratorSettings(name=cls.name, options=options)


def _legacy_generator(legacy: str, where: str) -> type[TaskGenerator]:
    generators = get_plugins().generators().values()
    matches = [g for g in generators if g.legacy_class == legacy]
    if len(matches) == 1:
        return matches[0]
    problem = "several installed generators replace" if matches else "no installed generator replaces"
    known = ", ".join(sorted(f"{g.legacy_class} ({g.name})" for g in generators if g.legacy_class)) or "none"
    raise ConfigError(f"{where}: {problem} Cyclone 2.x class '{legacy}' (known: {known})")


# -- command-line overrides and building the plugin objects --------------------------------


def apply_overrides(
    config: Config,
    generator_options: Sequence[str] = (),
    sink_options: Sequence[str] = (),
) -> Config:
    """Apply ``-g KEY=VALUE`` and ``-s SINK.KEY=VALUE`` options to ``config`` (in place) and
    return it.

    Values are read with :func:`~cyclone_core.convert.parse_scalar` (``10`` is a number, ``1M``
    a string, ``{"seconds": 2}`` a table).  A dotted key reaches into a table option
    (``-g args.seconds=2``).  An ``-s`` option for a sink the file does not name adds that sink.
    A malformed item raises :class:`UsageError` naming it.
    """
    for item in generator_options:
        key, value = _split_option(item, "generator option", "KEY=VALUE")
        _check_option(f"-g {item!r}", "generator", config.generator.name, key.partition(".")[0])
        _set_dotted(config.generator.options, key, value, item, "generator option")
    for item in sink_options:
        target, value = _split_option(item, "sink option", "SINK.KEY=VALUE")
        sink, _, key = target.partition(".")
        if not sink or not key:
            raise UsageError(f"sink option {item!r}: expected SINK.KEY=VALUE")
        _check_option(f"-s {item!r}", "sink", sink, key.partition(".")[0])
        _set_dotted(config.sinks.setdefault(sink, {}), key, value, item, "sink option")
    return config


def _split_option(item: str, what: str, form: str) -> tuple[str, Any]:
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise UsageError(f"{what} {item!r}: expected {form}")
    return key.strip(), parse_scalar(value)


def _set_dotted(options: MutableMapping[str, Any], key: str, value: Any, item: str, what: str) -> None:
    *parents, last = key.split(".")
    for part in parents:
        options = options.setdefault(part, {})
        if not isinstance(options, MutableMapping):
            raise UsageError(f"{what} {item!r}: {part} is not a table")
    if not last:
        raise UsageError(f"{what} {item!r}: empty key")
    options[last] = value


def build_generator(config: Config) -> TaskGenerator:
    """The registered generator ``config.generator.name``, built from its options.

    Raises :class:`ConfigError` naming the generator for an unknown name or a bad option.
    """
    name = config.generator.name
    return _build(get_plugins().generator, name, config.generator.options, f"generator '{name}'")


def build_sinks(config: Config) -> list[ResultSink]:
    """The sinks of ``config.sinks`` built from their options; the ``sqlite`` sink if none."""
    lookup = get_plugins().sink
    chosen = config.sinks or {DEFAULT_SINK: {}}
    return [_build(lookup, name, options, f"sink '{name}'") for name, options in chosen.items()]


def _build(lookup: Callable[[str], type[Any]], name: str, options: Mapping[str, Any], where: str) -> Any:
    return structure(dict(options), lookup(name), where=where)


def sink_options(name: str, config_file: str | Path | None = None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The options of sink ``name`` as ``cyclone run --config FILE -s ...`` would build it with:
    the ``[sinks.NAME]`` table of ``config_file`` (none: no options), then the ``-s
    SINK.KEY=VALUE`` items in ``overrides`` (those for other sinks change nothing here).

    For a plugin's own commands (``cyclone mysql create-table``).  A bad file raises
    :class:`ConfigError`, a malformed item :class:`UsageError`, each naming the problem.
    """
    config = load_config(config_file) if config_file is not None else Config()
    return dict(apply_overrides(config, sink_options=overrides).sinks.get(name, {}))
