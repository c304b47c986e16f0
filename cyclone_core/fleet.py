"""Controllers on many nodes at once, through ClusterShell: ``cyclone controllers start|stop|status``.

Each action is a short POSIX shell script run on every node of a node set over ssh
(ClusterShell's :class:`~ClusterShell.Task.Task`, with its fanout); this module builds the
scripts, runs them, and gathers what each node said the way ``clush -b`` does: nodes with the
same output share one block headed by their folded node set.

On a node, the controller's pid file and log are ``RUN_DIR/controller-NODE.pid`` and ``.log``
(``NODE`` as the node set names it), so one run directory may even be shared by all nodes.  The
pid file is the one ``cyclone controller --pid-file`` holds locked while it runs: a node runs a
controller exactly when that lock is held (``flock``), whatever pid a stale file names.

A script prints one line saying what happened (``started``, ``stopped``, ``running``, ...),
then ``pid N`` when there is a process; it exits 0 on success, 1 on failure and 3 for "not
running" (status).  ssh itself exits 255 when it cannot reach the node.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Mapping, Sequence

import attrs

from cyclone_core.engine.status import fold as fold_nodes
from cyclone_core.errors import UsageError
from cyclone_core.plural import plural

__all__ = (
    "NodeResult",
    "SshOptions",
    "StartOptions",
    "failed_nodes",
    "fold",
    "parse_nodes",
    "parse_output",
    "render_folded",
    "render_lines",
    "run_on_nodes",
    "start_script",
    "status_script",
    "stop_script",
)

#: The default run directory on each node (systemd's RuntimeDirectory=cyclone).
DEFAULT_RUN_DIR = "/run/cyclone"
#: Exit code of the status script on a node that runs no controller.
NOT_RUNNING = 3
#: Exit code of ssh when it cannot reach a node.
SSH_FAILED = 255
_PID_LINE = re.compile(r"pid (\d+)")
_SEPARATOR = "-" * 15


@attrs.frozen(kw_only=True)
class SshOptions:
    """How ClusterShell reaches the nodes."""

    #: An ssh client configuration file (``ssh -F``); empty: ssh's own.
    config: str = ""
    #: The remote user; empty: ssh's default (or the configuration's).
    user: str = ""
    #: More ssh options, as one shell-quoted string (``-o Port=2222``).
    options: str = ""
    #: Nodes contacted at once.
    fanout: int = 64
    #: Seconds ssh may take to connect.
    connect_timeout: float = 10.0


@attrs.frozen(kw_only=True)
class StartOptions:
    """What ``cyclone controllers start`` runs on every node."""

    #: The master's endpoint, tcp://HOST:PORT.
    master: str
    #: The run directory on the nodes (pid files and logs).
    run_dir: str = DEFAULT_RUN_DIR
    #: The controllers' key directory on the nodes; empty: their default.
    keys: str = ""
    #: Worker processes per controller; ``None``: the controller's default.
    workers: int | None = None
    #: More ``cyclone controller`` options, passed as they are.
    extra: tuple[str, ...] = ()
    #: The ``cyclone`` command on the nodes.
    cyclone: str = "cyclone"
    #: Seconds to wait for each controller to take its pid file.
    wait: float = 30.0


@attrs.frozen
class NodeResult:
    """What one node answered."""

    node: str
    #: The script's exit code; ``None`` if it did not end within the timeout.
    code: int | None
    #: What it said, without the ``pid N`` line.
    message: str
    #: The pid it named, if any.
    pid: int | None = None

    @property
    def ok(self) -> bool:
        return self.code == 0


# -- node sets ----------------------------------------------------------------------------------


def parse_nodes(text: str) -> list[str]:
    """The nodes of a ClusterShell node set (``node[01-32]``, ``@group``, ``a,b``), in order;
    :class:`UsageError` naming the bad set or group."""
    from ClusterShell.NodeSet import NodeSet, NodeSetException  # noqa: PLC0415  (only these commands need it)
    from ClusterShell.NodeUtils import GroupResolverError  # noqa: PLC0415

    try:
        nodes = list(NodeSet(text))
    except (NodeSetException, GroupResolverError) as exc:
        raise UsageError(f"-w {text!r} is not a node set ClusterShell can resolve: {exc}") from None
    if not nodes:
        raise UsageError(f"-w {text!r} names no node (an unknown or empty group?)")
    return nodes


# -- the scripts --------------------------------------------------------------------------------


def _prelude(node: str, run_dir: str) -> str:
    """Variables and the ``running`` test shared by every script."""
    base = f"{run_dir.rstrip('/') or '/'}/controller-{node}"
    return (
        f"pidfile={shlex.quote(base + '.pid')}; log={shlex.quote(base + '.log')}\n"
        # Running exactly when a process holds the pid file's lock (flock exits 75 when it cannot
        # take it).  The file is opened for reading, never created: a daemon that just removed
        # its file must not find it back, empty and stale.
        'running() { flock -n -E 75 9 2>/dev/null 9<"$pidfile"; [ $? -eq 75 ]; }\n'
    )


def _wrap(script: str) -> str:
    """The command line that runs ``script`` with ``sh``, whatever the remote user's shell."""
    return f"sh -c {shlex.quote(script)}"


def start_script(node: str, options: StartOptions) -> str:
    """The command that starts a detached controller on ``node``, unless one runs already."""
    argv = [options.cyclone, "controller", "--master", options.master]
    if options.keys:
        argv += ["--keys", options.keys]
    if options.workers is not None:
        argv += ["--workers", str(options.workers)]
    argv += [*options.extra, "--pid-file"]
    steps = max(1, round(options.wait * 10))
    return _wrap(
        _prelude(node, options.run_dir)
        + f"mkdir -p {shlex.quote(options.run_dir)} || exit 1\n"
        + 'if running; then echo "already running"; echo "pid $(cat "$pidfile")"; exit 0; fi\n'
        + 'cd / && size=$(wc -c <"$log" 2>/dev/null || echo 0)\n'
        + f'setsid {shlex.join(argv)} "$pidfile" </dev/null >>"$log" 2>&1 &\n'
        + "child=$!; i=0\n"
        # Started once it holds its pid file and has logged that it started (its keys and
        # settings checked); a controller that exits first failed.
        + 'started() { running && tail -c "+$((size + 1))" "$log" | grep -q " started: "; }\n'
        + f"while [ $i -lt {steps} ]; do\n"
        + '  if started; then echo started; echo "pid $(cat "$pidfile")"; exit 0; fi\n'
        + '  if ! kill -0 "$child" 2>/dev/null; then echo "failed to start (see $log):"; tail -n 3 "$log"; exit 1; fi\n'
        + "  sleep 0.1; i=$((i + 1))\n"
        + "done\n"
        # Its log may go elsewhere ([log] file): holding the pid file is then all there is to see.
        + 'if running; then echo started; echo "pid $(cat "$pidfile")"; exit 0; fi\n'
        + f'echo "no pid file after {options.wait:g} s (see $log)"; exit 1\n'
    )


def stop_script(node: str, run_dir: str, timeout: float) -> str:
    """The command that drains ``node``'s controller (SIGTERM) and waits up to ``timeout`` s."""
    steps = max(1, round(timeout * 10))
    return _wrap(
        _prelude(node, run_dir)
        + 'if ! running; then echo "not running"; exit 0; fi\n'
        + 'pid=$(cat "$pidfile"); kill -TERM "$pid" || exit 1\n'
        + "i=0\n"
        + f"while running && [ $i -lt {steps} ]; do sleep 0.1; i=$((i + 1)); done\n"
        + f'if running; then echo "still draining after {timeout:g} s"; echo "pid $pid"; exit 1; fi\n'
        + 'echo stopped; echo "pid $pid"\n'
    )


def status_script(node: str, run_dir: str) -> str:
    """The command that says whether ``node`` runs a controller."""
    return _wrap(
        _prelude(node, run_dir)
        + 'if running; then echo running; echo "pid $(cat "$pidfile")"; exit 0; fi\n'
        + 'if [ -e "$pidfile" ]; then echo "not running (stale pid file)"; else echo "not running"; fi\n'
        + f"exit {NOT_RUNNING}\n"
    )


# -- running and gathering ----------------------------------------------------------------------


def parse_output(node: str, code: int | None, stdout: str, stderr: str, timeout: float) -> NodeResult:
    """A node's answer from its exit code and output: a trailing ``pid N`` line becomes
    :attr:`NodeResult.pid`; ssh's own errors (exit code 255) and a timeout say so."""
    lines = [line.rstrip() for line in stdout.splitlines() if line.strip()]
    pid = None
    if lines and (match := _PID_LINE.fullmatch(lines[-1])):
        pid = int(match[1])
        lines.pop()
    if code is None:
        lines.append(f"timed out after {timeout:g} s")
    elif code == SSH_FAILED:
        lines += [line.rstrip() for line in stderr.splitlines() if line.strip()] or ["ssh failed (exit code 255)"]
    elif code != 0 and not lines:
        lines = [line.rstrip() for line in stderr.splitlines() if line.strip()] or [f"exit code {code}"]
    return NodeResult(node, code, "\n".join(lines), pid)


def run_on_nodes(
    nodes: Sequence[str], command_for: Callable[[str], str], ssh: SshOptions, timeout: float
) -> dict[str, NodeResult]:
    """Run ``command_for(node)`` on every node over ssh, ``ssh.fanout`` at once, each for at
    most ``timeout`` seconds; every node's answer, in the order of ``nodes``."""
    from ClusterShell.Task import task_self  # noqa: PLC0415  (only these commands need it)

    task = task_self()
    task.set_info("fanout", ssh.fanout)
    task.set_info("connect_timeout", ssh.connect_timeout)
    options = " ".join(filter(None, [f"-F {shlex.quote(ssh.config)}" if ssh.config else "", ssh.options]))
    task.set_info("ssh_options", options)
    if ssh.user:
        task.set_info("ssh_user", ssh.user)
    for node in nodes:
        task.shell(command_for(node), nodes=node, stderr=True, timeout=timeout)
    task.resume()
    codes: dict[str, int] = {}
    for code, keys in task.iter_retcodes():
        codes.update(dict.fromkeys(keys, code))
    results = {}
    for node in nodes:
        stdout = bytes(task.key_buffer(node)).decode(errors="replace")
        stderr = bytes(task.key_error(node)).decode(errors="replace")
        results[node] = parse_output(node, codes.get(node), stdout, stderr, timeout)
    return results


def _gathered(results: Mapping[str, NodeResult]) -> dict[str, list[str]]:
    """The nodes of each distinct message, messages in order of first appearance."""
    groups: dict[str, list[str]] = {}
    for result in results.values():
        groups.setdefault(result.message, []).append(result.node)
    return groups


def fold(results: Mapping[str, NodeResult]) -> list[tuple[str, str]]:
    """``(folded node set, message)`` for each distinct message, in order of first appearance:
    what ``clush -b`` gathers."""
    return [(fold_nodes(nodes), message) for message, nodes in _gathered(results).items()]


def render_folded(results: Mapping[str, NodeResult]) -> str:
    """The answers as ``clush -b`` shows them: one block per distinct message, headed by the
    folded node set and its size."""
    blocks = []
    for message, nodes in _gathered(results).items():
        header = f"{fold_nodes(nodes)} ({len(nodes)})"
        separator = "-" * max(len(_SEPARATOR), len(header))
        blocks.append(f"{separator}\n{header}\n{separator}\n{message}")
    return "\n".join(blocks)


def render_lines(results: Mapping[str, NodeResult]) -> str:
    """The answers one node per line, each with its pid: ``node1: running (pid 4711)``."""
    lines = []
    for result in results.values():
        pid = f" (pid {result.pid})" if result.pid is not None else ""
        first, *rest = result.message.splitlines() or [""]
        lines.append(f"{result.node}: {first}{pid}")
        lines += [f"{result.node}: {line}" for line in rest]
    return "\n".join(lines)


def failed_nodes(results: Mapping[str, NodeResult]) -> str:
    """One line naming the nodes that did not succeed (folded), or ``""`` when all did."""
    failed = [result.node for result in results.values() if not result.ok]
    if not failed:
        return ""
    return f"{plural(len(failed), 'node')} of {len(results)} failed: {fold_nodes(failed)}"
