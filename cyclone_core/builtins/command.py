"""The ``command`` task type: run a program, keep its exit code, the tails of its output and
the metrics it prints.

What a command may run is the controller's decision, never the task's: the type is off until
the controller's ``[controller.local.command]`` table allows executables (``argv[0]`` resolved
to an absolute path, or the shell for ``shell = true``), and a task may set ``cwd`` only under
the table's ``cwd_roots`` and no environment variable named in ``refuse_env``.  ``cyclone
run`` enables it for the user's own embedded controllers (:data:`EMBEDDED_LOCAL`).

The command runs in a session of its own, with a clean environment (:func:`base_environment`
plus the task's ``env``), stdin from the task's ``stdin`` text (else ``/dev/null``), and its
stdout and stderr read as it runs: the last ``tail`` bytes of each are kept in the result, and
stdout lines ``cyclone-metric NAME VALUE [label=value ...]`` become the result's metrics.  When
it exits, what is left of its process group is killed; the worker (a child subreaper, see
:mod:`cyclone_core.engine.reaper`) kills anything that left the group.
"""

from __future__ import annotations

import contextlib
import fnmatch
import math
import os
import re
import selectors
import shutil
import signal
import subprocess
from collections.abc import Mapping
from typing import IO, Any, ClassVar

import attrs

from cyclone_core.model import ByteSize, Metric, Outcome, Status, Task, TaskContext

__all__ = (
    "DEFAULT_PASS_ENV",
    "DEFAULT_REFUSE_ENV",
    "EMBEDDED_LOCAL",
    "CommandLocal",
    "CommandTask",
    "base_environment",
    "parse_metric",
)

#: Environment variables a task may not set unless the controller says otherwise: they change
#: which code an allowed program loads.
DEFAULT_REFUSE_ENV = ("LD_PRELOAD", "LD_LIBRARY_PATH", "PYTHONPATH", "PATH")
#: Variables of the controller's environment a command gets (besides ``PATH``).
DEFAULT_PASS_ENV = ("HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR")
#: ``PATH`` of a command when the controller has none.
DEFAULT_PATH = "/usr/local/bin:/usr/bin:/bin"
#: The ``[controller.local.command]`` table of ``cyclone run``'s embedded controllers, which
#: run as the user, on the user's machine, for the user alone: every program, any directory.
EMBEDDED_LOCAL: Mapping[str, Any] = {"executables": ["*"], "cwd_roots": ["/"]}
#: The error of a command task on a controller that allows no programs.
OFF = "task type 'command' is off on this controller: allow programs in [controller.local.command] executables"
#: Metrics one command may report at most.
MAX_METRICS = 1000
#: Most bytes of each of stdout and stderr a task may keep.
MAX_TAIL = 1 << 20
#: The prefix of a metric line on stdout.
METRIC_PREFIX = "cyclone-metric"
_METRIC_PREFIX = METRIC_PREFIX.encode() + b" "
#: Bytes of a stdout line looked at for a metric at most.
_MAX_LINE = 64 * 1024
#: Characters of stderr's last line quoted in a failed command's error at most.
_ERROR_LINE = 300
_READ = 64 * 1024

_METRIC_NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_NAME = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_METRIC_FORM = f"{METRIC_PREFIX} NAME VALUE [label=value ...]"
_EXECUTABLES = "controller.local.command.executables"


def _absolute(instance: object, attribute: attrs.Attribute[Any], value: str | list[str]) -> None:
    for item in [value] if isinstance(value, str) else value:
        if not item.startswith("/") and item != "*":
            raise ValueError(f"'{attribute.name}' must be absolute paths: {item!r}")


@attrs.frozen(kw_only=True)
class CommandLocal:
    """``[controller.local.command]``: what commands this controller runs.

    :param executables: the programs tasks may run: absolute paths, or patterns
        (``/opt/sim/bin/*``; ``*`` also matches ``/``, so ``"*"`` alone allows every program).
        ``argv[0]`` is resolved (through ``PATH`` when it has no ``/``) and must match one,
        as it is written or with its symbolic links followed; with ``shell = true`` the shell
        must.  Empty: the ``command`` type is off.
    :param cwd_roots: directories under which a task may set ``cwd``; empty: a task may not
        set one (its command runs in the controller's working directory).
    :param refuse_env: environment variables a task may not set.
    :param pass_env: variables of the controller's environment every command gets (``PATH``
        always: the controller's, else ``/usr/local/bin:/usr/bin:/bin``).
    :param shell: the shell of ``shell = true`` tasks.
    """

    executables: list[str] = attrs.field(factory=list, validator=_absolute)
    cwd_roots: list[str] = attrs.field(factory=list, validator=_absolute)
    refuse_env: list[str] = attrs.field(factory=lambda: list(DEFAULT_REFUSE_ENV))
    pass_env: list[str] = attrs.field(factory=lambda: list(DEFAULT_PASS_ENV))
    shell: str = attrs.field(default="/bin/sh", validator=_absolute)


def _byte_size(value: object) -> ByteSize:
    return ByteSize.parse(value)


def _argv(instance: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    if not value:
        raise ValueError("'argv' must be a program and its arguments: []")
    if any("\0" in item for item in value):
        raise ValueError("'argv' must be free of NUL characters")


def _env(instance: object, attribute: attrs.Attribute[Any], value: dict[str, str]) -> None:
    for name, text in value.items():
        if not name or "=" in name or "\0" in name or "\0" in text:
            raise ValueError(f"'env' must be variable names without '=' and texts without NUL: {name!r}")


@attrs.define(kw_only=True)
class CommandTask(Task):
    """Run a program; ok when it exits 0, else failed with the end of its stderr as the error.

    :param argv: the program and its arguments; ``argv[0]`` without a ``/`` is looked up in
        ``PATH``.  No shell is involved, unless ``shell`` is set.
    :param shell: run ``argv[0]`` as a shell command line (``/bin/sh -c``, the controller's
        ``shell``); further items are its positional parameters ``$1``, ``$2``, ...
    :param env: variables added to the command's clean environment.
    :param cwd: the working directory; unset: the controller's.
    :param stdin: text fed to the command's standard input; unset: ``/dev/null``.
    :param tail: bytes of the end of each of stdout and stderr kept in the result (``"4K"``).
    :param params: the parameters of a sweep point, kept in the result's payload as they are.
    """

    name: ClassVar[str] = "command"
    local_settings: ClassVar[type[Any] | None] = CommandLocal
    embedded_local: ClassVar[Mapping[str, Any] | None] = EMBEDDED_LOCAL

    needs_keys: ClassVar[bool] = True

    @classmethod
    def off_because(cls, local: Any) -> str | None:
        """Off until ``[controller.local.command] executables`` allows a program."""
        return None if local.executables else OFF

    argv: list[str] = attrs.field(validator=_argv)
    shell: bool = False
    env: dict[str, str] = attrs.field(factory=dict, validator=_env)
    cwd: str | None = None
    stdin: str | None = None
    tail: ByteSize = attrs.field(
        default=ByteSize(4096), converter=_byte_size, validator=attrs.validators.le(ByteSize(MAX_TAIL))
    )
    params: dict[str, Any] = attrs.field(factory=dict)

    def execute(self, ctx: TaskContext) -> Outcome:
        """Check the command against the controller's settings, run it, and report."""
        local: CommandLocal = ctx.local
        if not local.executables:
            return Outcome(status=Status.FAILED, error=OFF)
        try:
            env = self._environment(local, ctx)
            cwd = self._cwd(local)
            program = self._program(local, env, cwd)
            argv = [local.shell, "-c", self.argv[0], "sh", *self.argv[1:]] if self.shell else self.argv
            stdin = None if self.stdin is None else self.stdin.encode()
            run = _run(argv, program, env=env, cwd=cwd, stdin=stdin, tail=self.tail)
        except _Refused as exc:
            return Outcome(status=Status.FAILED, error=str(exc))
        payload: dict[str, Any] = {
            "argv": self.argv,
            "exit_code": run.exit_code,
            "stdout": _text(run.stdout),
            "stderr": _text(run.stderr),
        }
        if self.params:
            payload["params"] = self.params
        status, error = Status.OK, None
        if run.exit_code != 0:
            status, error = Status.FAILED, _exit_error(run.exit_code, run.stderr)
        elif run.metric_error is not None:
            status, error = Status.FAILED, run.metric_error
        return Outcome(metrics=run.metrics, payload=payload, status=status, error=error)

    def _environment(self, local: CommandLocal, ctx: TaskContext) -> dict[str, str]:
        refused = sorted(set(self.env) & set(local.refuse_env))
        if refused:
            raise _Refused(
                f"env: {', '.join(refused)} may not be set by a task here (controller.local.command.refuse_env)"
            )
        env = base_environment(local.pass_env)
        env.update(CYCLONE_TASK_ID=ctx.task_id, CYCLONE_ATTEMPT=str(ctx.attempt))
        env.update(self.env)
        return env

    def _cwd(self, local: CommandLocal) -> str | None:
        if self.cwd is None:
            return None
        if not local.cwd_roots:
            raise _Refused(f"cwd {self.cwd!r}: no cwd_roots allowed (controller.local.command.cwd_roots)")
        resolved = os.path.realpath(self.cwd)
        for root in local.cwd_roots:
            real_root = os.path.realpath(root)
            if resolved == real_root or resolved.startswith(real_root.rstrip("/") + "/"):
                return resolved
        roots = ", ".join(local.cwd_roots)
        raise _Refused(f"cwd {self.cwd!r} is outside the allowed roots {roots} (controller.local.command.cwd_roots)")

    def _program(self, local: CommandLocal, env: Mapping[str, str], cwd: str | None) -> str:
        name = local.shell if self.shell else self.argv[0]
        if "/" in name:
            path = os.path.join(cwd or os.getcwd(), name)
            if not os.path.isfile(path) or not os.access(path, os.X_OK):
                raise _Refused(f"argv[0] {name!r}: no executable file {os.path.normpath(path)}")
        else:
            found = shutil.which(name, path=env.get("PATH", DEFAULT_PATH))
            if found is None:
                raise _Refused(f"argv[0] {name!r}: not found in PATH {env.get('PATH', DEFAULT_PATH)}")
            path = found
        absolute, real = os.path.normpath(os.path.abspath(path)), os.path.realpath(path)
        if not _allowed(absolute, real, local.executables):
            what = "the shell" if self.shell else f"argv[0] {name!r}"
            raise _Refused(f"{what} ({real}) is not an allowed executable on this controller ({_EXECUTABLES})")
        return real  # what was checked is what runs, even should the link change meanwhile


class _Refused(Exception):
    """The command cannot run here; the message is the task's error."""


def _allowed(absolute: str, real: str, patterns: list[str]) -> bool:
    for pattern in patterns:
        if fnmatch.fnmatchcase(absolute, pattern) or fnmatch.fnmatchcase(real, pattern):
            return True
        if not any(char in pattern for char in "*?[") and os.path.realpath(pattern) == real:
            return True
    return False


def base_environment(pass_env: list[str] | tuple[str, ...] = DEFAULT_PASS_ENV) -> dict[str, str]:
    """The environment every command starts from: ``PATH`` (the controller's, else
    ``/usr/local/bin:/usr/bin:/bin``) and the variables of ``pass_env`` the controller has."""
    env = {"PATH": os.environ.get("PATH") or DEFAULT_PATH}
    env.update((name, os.environ[name]) for name in pass_env if name in os.environ)
    return env


@attrs.define
class _Run:
    exit_code: int = 0
    stdout: bytes = b""
    stderr: bytes = b""
    metrics: list[Metric] = attrs.field(factory=list)
    metric_error: str | None = None


class _Tail:
    """The last ``size`` bytes of a stream."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.data = bytearray()

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        if len(self.data) > 2 * self.size:
            del self.data[: len(self.data) - self.size]

    def value(self) -> bytes:
        return bytes(self.data[len(self.data) - self.size :]) if self.size else b""


class _MetricLines:
    """Picks ``cyclone-metric`` lines out of stdout as it comes."""

    def __init__(self) -> None:
        self.partial = bytearray()
        self.line = 0
        self.metrics: list[Metric] = []
        self.error: str | None = None

    def add(self, chunk: bytes) -> None:
        self.partial += chunk
        *lines, rest = self.partial.split(b"\n")
        for line in lines:
            self._line(bytes(line))
        self.partial = bytearray(rest) if len(rest) <= _MAX_LINE else bytearray()

    def end(self) -> None:
        if self.partial:
            self._line(bytes(self.partial))
            self.partial = bytearray()

    def _line(self, line: bytes) -> None:
        self.line += 1
        if self.error is not None or not line.startswith(_METRIC_PREFIX):
            return
        try:
            metric = parse_metric(line.decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            self.error = f"stdout line {self.line}: {exc}"
            return
        if len(self.metrics) >= MAX_METRICS:
            self.error = f"stdout line {self.line}: more than {MAX_METRICS} {METRIC_PREFIX} lines"
            return
        self.metrics.append(metric)


def parse_metric(line: str) -> Metric:
    """The metric of a line ``cyclone-metric NAME VALUE [label=value ...]``; a malformed line
    raises ``ValueError`` saying what is wrong."""
    words = line.split()
    if len(words) < 3 or words[0] != METRIC_PREFIX:
        raise ValueError(f"expected '{_METRIC_FORM}', got {line.strip()[:80]!r}")
    _, name, text, *labels = words
    if not _METRIC_NAME.fullmatch(name):
        raise ValueError(f"{METRIC_PREFIX}: {name[:80]!r} is not a metric name ([a-zA-Z_:][a-zA-Z0-9_:]*)")
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{METRIC_PREFIX} {name}: {text[:80]!r} is not a number") from None
    if not math.isfinite(value):
        raise ValueError(f"{METRIC_PREFIX} {name}: {text!r} is not a finite number")
    found: dict[str, str] = {}
    for label in labels:
        key, sep, label_value = label.partition("=")
        if not sep or not _LABEL_NAME.fullmatch(key):
            raise ValueError(f"{METRIC_PREFIX} {name}: {label[:80]!r} is not a label=value pair")
        found[key] = label_value
    return Metric(name, value, labels=found)


def _run(
    argv: list[str], program: str, *, env: dict[str, str], cwd: str | None, stdin: bytes | None, tail: int
) -> _Run:
    """Run the command to its end, reading its output as it comes; then kill what is left of
    its process group."""
    try:
        process = subprocess.Popen(
            argv,
            executable=program,
            env=env,
            cwd=cwd,
            stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,  # its own process group: killed as one when it ends
        )
    except OSError as exc:
        raise _Refused(f"cannot run {program}: {exc.strerror or exc}") from None
    command = _Running(process, stdin or b"", tail)
    try:
        command.pump()
    finally:
        command.end()
    return _Run(
        process.returncode, command.out.value(), command.err.value(), command.lines.metrics, command.lines.error
    )


class _Running:
    """A started command: its input fed and its output read as they flow, until it exits."""

    def __init__(self, process: subprocess.Popen[bytes], stdin: bytes, tail: int) -> None:
        self.process = process
        self.out, self.err, self.lines = _Tail(tail), _Tail(tail), _MetricLines()
        self.pending = memoryview(stdin)
        self.selector = selectors.DefaultSelector()
        self.streams: dict[int, tuple[Any, ...]] = {}
        if process.stdout is not None:
            self.streams[process.stdout.fileno()] = (self.out.add, self.lines.add)
        if process.stderr is not None:
            self.streams[process.stderr.fileno()] = (self.err.add,)

    def pump(self) -> None:
        """Feed stdin and read stdout and stderr until the command exits."""
        exited = os.pidfd_open(self.process.pid)  # readable once it exits: no polling
        try:
            self.selector.register(exited, selectors.EVENT_READ)
            for fd in self.streams:
                os.set_blocking(fd, False)
                self.selector.register(fd, selectors.EVENT_READ)
            stdin = self.process.stdin
            stdin_fd = -1 if stdin is None else stdin.fileno()
            if stdin is not None:
                os.set_blocking(stdin_fd, False)
                self.selector.register(stdin_fd, selectors.EVENT_WRITE)
            while True:
                for key, _ in self.selector.select():
                    if key.fd == exited:
                        return
                    if key.fd == stdin_fd and stdin is not None:
                        self._feed(stdin)
                    elif not self._read(key.fd, once=True):
                        self.selector.unregister(key.fd)
        finally:
            os.close(exited)

    def end(self) -> None:
        """It exited (or reading failed): kill what is left of its process group, read what
        it wrote without waiting for an end of file that a process outside the group may hold
        back, and reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        for fd in self.streams:
            self._read(fd, once=False)
        self.lines.end()
        self.selector.close()
        for stream in (self.process.stdin, self.process.stdout, self.process.stderr):
            if stream is not None:
                with contextlib.suppress(OSError):
                    stream.close()
        self.process.wait()

    def _read(self, fd: int, *, once: bool) -> bool:
        """Read what ``fd`` has (one read when ``once``, else all there is); False at its end."""
        while True:
            try:
                chunk = os.read(fd, _READ)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not chunk:
                return False
            for sink in self.streams[fd]:
                sink(chunk)
            if once:
                return True

    def _feed(self, stdin: IO[bytes]) -> None:
        try:
            self.pending = self.pending[os.write(stdin.fileno(), self.pending[:_READ]) :]
        except BlockingIOError:
            return
        except OSError:  # it closed its input: the rest is dropped
            self.pending = self.pending[:0]
        if not self.pending:
            self.selector.unregister(stdin.fileno())
            with contextlib.suppress(OSError):
                stdin.close()


def _text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def _exit_error(code: int, stderr: bytes) -> str:
    if code < 0:
        try:
            head = f"killed by {signal.Signals(-code).name}"
        except ValueError:
            head = f"killed by signal {-code}"
    else:
        head = f"exit code {code}"
    lines = [line for line in _text(stderr).splitlines() if line.strip()]
    if not lines:
        return head
    last = " ".join(lines[-1].split())
    return f"{head}: {last[:_ERROR_LINE]}"
