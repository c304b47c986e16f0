"""``cyclone controllers start|stop|status -w NODESET``: controllers on many nodes, over ssh
through ClusterShell (see :mod:`cyclone_core.fleet`).

What every node answered goes to stdout, gathered as ``clush -b`` gathers it (``--lines``: one
line per node, with pids); the nodes that failed are named on stderr, and the exit code is 1.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

import typer

from cyclone_core import fleet
from cyclone_core.cli import app
from cyclone_core.config import check_endpoint

__all__ = ("controllers_app",)

controllers_app = typer.Typer(
    help="Start, stop and look at controllers on many nodes at once, over ssh (ClusterShell).",
    no_args_is_help=True,
)
app.add_typer(controllers_app, name="controllers")

NodesOption = Annotated[
    str, typer.Option("--nodes", "-w", help="ClusterShell node set: node[01-32], @group, or a list a,b.")
]
RunDirOption = Annotated[
    str,
    typer.Option(
        "--run-dir",
        envvar="CYCLONE_RUN_DIR",
        help="Directory on the nodes for the pid files and logs (controller-NODE.pid, controller-NODE.log).",
    ),
]
SshConfigOption = Annotated[
    str, typer.Option("--ssh-config", envvar="CYCLONE_SSH_CONFIG", help="ssh client configuration file (ssh -F).")
]
SshUserOption = Annotated[str, typer.Option("--ssh-user", envvar="CYCLONE_SSH_USER", help="Remote user for ssh.")]
SshOptionsOption = Annotated[
    str, typer.Option("--ssh-options", envvar="CYCLONE_SSH_OPTIONS", help="More ssh options, e.g. '-o Port=2222'.")
]
FanoutOption = Annotated[int, typer.Option("--fanout", "-f", min=1, help="Nodes contacted at once.")]
LinesOption = Annotated[bool, typer.Option("--lines", "-L", help="One line per node, with pids, instead of blocks.")]


def _ssh(config: str, user: str, options: str, fanout: int) -> fleet.SshOptions:
    return fleet.SshOptions(config=config, user=user, options=options, fanout=fanout)


def _report(
    nodes: str,
    command_for: Callable[[str], str],
    ssh: fleet.SshOptions,
    timeout: float,
    lines: bool,
) -> None:
    """Run on every node, print the answers, exit 1 naming the nodes that failed."""
    results = fleet.run_on_nodes(fleet.parse_nodes(nodes), command_for, ssh, timeout)
    typer.echo(fleet.render_lines(results) if lines else fleet.render_folded(results))
    failed = fleet.failed_nodes(results)
    if failed:
        typer.echo(f"error: {failed}", err=True)
        raise typer.Exit(1)


@controllers_app.command()
def start(  # noqa: PLR0917
    nodes: NodesOption,
    master: Annotated[str, typer.Option("--master", help="The master's endpoint, tcp://HOST:PORT.")],
    extra: Annotated[
        list[str] | None, typer.Argument(help="More 'cyclone controller' options, after --.", show_default=False)
    ] = None,
    keys: Annotated[str, typer.Option("--keys", help="The controllers' key directory on the nodes.")] = "",
    workers: Annotated[int | None, typer.Option("--workers", min=1, help="Worker processes per controller.")] = None,
    run_dir: RunDirOption = fleet.DEFAULT_RUN_DIR,
    cyclone: Annotated[
        str, typer.Option("--cyclone", envvar="CYCLONE_REMOTE_COMMAND", help="The cyclone command on the nodes.")
    ] = "cyclone",
    wait: Annotated[
        float, typer.Option("--wait", min=0.1, help="Seconds to wait for each controller to start.")
    ] = 30.0,
    ssh_config: SshConfigOption = "",
    ssh_user: SshUserOption = "",
    ssh_options: SshOptionsOption = "",
    fanout: FanoutOption = 64,
    lines: LinesOption = False,
) -> None:
    """Start a detached controller on every node, unless one runs there already.

    Example: cyclone controllers start -w node[01-32] --master tcp://head01:5678 --workers 8 -- --stay
    """
    check_endpoint(master, "--master")
    options = fleet.StartOptions(
        master=master,
        run_dir=run_dir,
        keys=keys,
        workers=workers,
        extra=tuple(extra or ()),
        cyclone=cyclone,
        wait=wait,
    )
    _report(
        nodes,
        lambda node: fleet.start_script(node, options),
        _ssh(ssh_config, ssh_user, ssh_options, fanout),
        wait + 30.0,
        lines,
    )


@controllers_app.command()
def stop(  # noqa: PLR0917
    nodes: NodesOption,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for each controller to drain and exit.")
    ] = 60.0,
    run_dir: RunDirOption = fleet.DEFAULT_RUN_DIR,
    ssh_config: SshConfigOption = "",
    ssh_user: SshUserOption = "",
    ssh_options: SshOptionsOption = "",
    fanout: FanoutOption = 64,
    lines: LinesOption = False,
) -> None:
    """Drain the controller of every node (SIGTERM through its pid file) and wait for it to exit."""
    _report(
        nodes,
        lambda node: fleet.stop_script(node, run_dir, timeout),
        _ssh(ssh_config, ssh_user, ssh_options, fanout),
        timeout + 30.0,
        lines,
    )


@controllers_app.command()
def status(  # noqa: PLR0917
    nodes: NodesOption,
    run_dir: RunDirOption = fleet.DEFAULT_RUN_DIR,
    ssh_config: SshConfigOption = "",
    ssh_user: SshUserOption = "",
    ssh_options: SshOptionsOption = "",
    fanout: FanoutOption = 64,
    lines: LinesOption = False,
) -> None:
    """Say whether every node runs a controller (exit code 1 if one does not, or is unreachable)."""
    _report(
        nodes,
        lambda node: fleet.status_script(node, run_dir),
        _ssh(ssh_config, ssh_user, ssh_options, fanout),
        30.0,
        lines,
    )
