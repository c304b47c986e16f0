"""A virtual cluster on one machine: network namespaces for hosts, a bridge for their network,
an ``sshd`` on each node.

Each host (``head``, ``node1``...) is a network namespace with its loopback up and one veth
link to a bridge that lives in a namespace of its own (the "switch"), so the machine's own
network is never touched.  Every node runs ``sshd`` (host key, authorized_keys and config in a
private directory) that admits one generated client key; :attr:`VirtualCluster.ssh_config`
names the nodes for ``ssh -F`` (and so for ClusterShell).  The namespaces share the file system,
so the installed ``cyclone`` runs in each.

Namespaces are named ``cvc<pid>-<host>``: a run killed before it cleaned up leaves names that
the next run recognises (the pid is dead) and removes first, with every process in them.

No pytest here: ``benchmarks/partition.py`` builds the same cluster.  Root only.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

import attrs

__all__ = ("PREFIX", "Host", "VirtualCluster", "missing_requirements", "wait_for")

#: Every namespace this module makes starts with it (then the pid of the process that made it).
PREFIX = "cvc"
SUBNET = "10.77.0"
TOOLS = ("ip", "sshd", "ssh", "ssh-keygen")


def missing_requirements() -> str | None:
    """Why a virtual cluster cannot be built here, or ``None`` if it can."""
    if os.geteuid() != 0:
        return "network namespaces need root"
    missing = [tool for tool in TOOLS if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        return f"missing {', '.join(missing)} (Debian packages iproute2, openssh-server, openssh-client)"
    return None


def wait_for(condition: Callable[[], Any], timeout: float, what: str) -> Any:
    """Call ``condition`` until it returns something true and return that; :class:`TimeoutError`
    naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.2)


def _run(*argv: str, check: bool = True, timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _sbin(tool: str) -> str:
    return shutil.which(tool) or f"/usr/sbin/{tool}"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _namespace_pids(namespace: str) -> list[int]:
    result = _run("ip", "netns", "pids", namespace, check=False)
    return [int(pid) for pid in result.stdout.split() if pid.isdigit()]


def _delete_namespace(namespace: str) -> None:
    """Kill every process in ``namespace`` and delete it (its links go with it)."""
    for _ in range(50):
        pids = _namespace_pids(namespace)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    _run("ip", "netns", "delete", namespace, check=False)


def remove_stale(also: str = "") -> list[str]:
    """Delete the namespaces left by runs whose process is gone, and those named ``also-...``;
    returns their names."""
    removed = []
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split(" ", 1)[0]
        owner = name[len(PREFIX) :].split("-", 1)[0]
        dead = name.startswith(PREFIX) and owner.isdigit() and not _pid_alive(int(owner))
        if dead or (also and name.startswith(f"{also}-")):
            _delete_namespace(name)
            removed.append(name)
    return removed


@attrs.frozen
class Host:
    """One host of the virtual cluster."""

    #: Its name, as ssh and ClusterShell know it.
    name: str
    #: Its network namespace.
    namespace: str
    #: Its address on the cluster network.
    address: str
    #: Its port on the switch: the veth end inside the switch namespace.
    port: str


class VirtualCluster:
    """Hosts in network namespaces on one bridge, with ``sshd`` on the nodes.

    :param directory: a private directory for keys, configs and logs (created).
    :param nodes: the nodes' names (each gets an ``sshd``); ``head`` is always added.

    Use as a context manager, or call :meth:`up` and (always) :meth:`down`.
    """

    def __init__(self, directory: Path, nodes: Sequence[str] = ("node1", "node2", "node3")) -> None:
        self.directory = directory
        self.tag = f"{PREFIX}{os.getpid()}"
        self.switch = f"{self.tag}-switch"
        names = ["head", *nodes]
        self.hosts: dict[str, Host] = {
            name: Host(name, f"{self.tag}-{name}", f"{SUBNET}.{index + 1}", f"p-{name}"[:15])
            for index, name in enumerate(names)
        }
        self.nodes = list(nodes)
        self.ssh_config = directory / "ssh_config"
        self.client_key = directory / "id_ed25519"
        self._sshd: dict[str, subprocess.Popen[bytes]] = {}
        self._spawned: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> VirtualCluster:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    @property
    def head(self) -> Host:
        return self.hosts["head"]

    # -- building and tearing down --------------------------------------------------------------

    def up(self) -> None:
        """Build the network, start every node's ``sshd`` and wait until ssh reaches each one."""
        remove_stale(also=self.tag)  # a killed run whose pid this process now has left these
        self.directory.mkdir(parents=True, exist_ok=True)
        _run("ip", "netns", "add", self.switch)
        _run("ip", "-n", self.switch, "link", "set", "lo", "up")
        _run("ip", "-n", self.switch, "link", "add", "br0", "type", "bridge")
        _run("ip", "-n", self.switch, "link", "set", "br0", "up")
        for host in self.hosts.values():
            _run("ip", "netns", "add", host.namespace)
            _run("ip", "-n", host.namespace, "link", "set", "lo", "up")
            _run("ip", "-n", host.namespace, "link", "add", "eth0", "type", "veth",
                 "peer", "name", host.port, "netns", self.switch)  # fmt: skip
            _run("ip", "-n", host.namespace, "addr", "add", f"{host.address}/24", "dev", "eth0")
            _run("ip", "-n", host.namespace, "link", "set", "eth0", "up")
            _run("ip", "-n", self.switch, "link", "set", host.port, "master", "br0")
            _run("ip", "-n", self.switch, "link", "set", host.port, "up")
        self._write_ssh_files()
        for name in self.nodes:
            self.start_sshd(name)
        for name in self.nodes:
            wait_for(lambda name=name: self.ssh_works(name), 30, f"sshd on {name}")

    def down(self) -> None:
        """Stop every process started here or running in a namespace, and delete the namespaces."""
        for proc in [*self._spawned, *self._sshd.values()]:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
        for host in self.hosts.values():
            _delete_namespace(host.namespace)
        _delete_namespace(self.switch)
        for proc in [*self._spawned, *self._sshd.values()]:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._spawned.clear()
        self._sshd.clear()

    def _write_ssh_files(self) -> None:
        if not self.client_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "cyclone-test", "-f", str(self.client_key))
        host_key = self.directory / "ssh_host_ed25519_key"
        if not host_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        authorized = self.directory / "authorized_keys"
        authorized.write_text(self.client_key.with_suffix(".pub").read_text())
        authorized.chmod(0o600)
        self.ssh_config.write_text(
            "".join(
                f"Host {name}\n"
                f"    HostName {self.hosts[name].address}\n"
                "    User root\n"
                f"    IdentityFile {self.client_key}\n"
                "    IdentitiesOnly yes\n"
                "    StrictHostKeyChecking no\n"
                "    UserKnownHostsFile /dev/null\n"
                "    LogLevel ERROR\n"
                "    ConnectTimeout 5\n"
                for name in self.nodes
            )
        )
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation directory
        for name in self.nodes:
            (self.directory / f"sshd_config-{name}").write_text(
                f"ListenAddress {self.hosts[name].address}\n"
                "Port 22\n"
                f"HostKey {host_key}\n"
                f"AuthorizedKeysFile {authorized}\n"
                f"PidFile {self.directory / f'sshd-{name}.pid'}\n"
                "PermitRootLogin prohibit-password\n"
                "PasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\n"
                "UsePAM no\n"
                "StrictModes no\n"
                "UseDNS no\n"
                "PrintMotd no\n"
                "MaxStartups 100\n"
                "MaxSessions 100\n"
            )

    # -- processes in the hosts -----------------------------------------------------------------

    def start_sshd(self, name: str) -> None:
        """Start ``sshd`` on node ``name`` (again, after :meth:`stop_sshd`)."""
        log = (self.directory / f"sshd-{name}.log").open("ab")
        with log:
            self._sshd[name] = subprocess.Popen(
                ["ip", "netns", "exec", self.hosts[name].namespace, _sbin("sshd"), "-D", "-e",
                 "-f", str(self.directory / f"sshd_config-{name}")],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True,
            )  # fmt: skip

    def stop_sshd(self, name: str) -> None:
        """Stop node ``name``'s ``sshd`` (its ssh sessions end with it)."""
        proc = self._sshd.pop(name, None)
        if proc is not None and proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def kill_strays(self) -> list[int]:
        """SIGKILL every process in the hosts but their ``sshd``: what a test left running
        (detached controllers, their workers); returns their pids once they are gone."""
        keep = {proc.pid for proc in self._sshd.values()}
        killed = [pid for host in self.hosts.values() for pid in _namespace_pids(host.namespace) if pid not in keep]
        for pid in killed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for proc in self._spawned:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
        self._spawned.clear()
        wait_for(lambda: not any(_pid_alive(pid) and not _zombie(pid) for pid in killed), 20, "killed processes")
        return killed

    def ssh_works(self, name: str) -> bool:
        """Whether ``ssh NAME true`` from the head node succeeds."""
        result = self.run("head", "ssh", "-F", str(self.ssh_config), "-o", "BatchMode=yes", name, "true", check=False)
        return result.returncode == 0

    def command(self, host: str, argv: Sequence[str]) -> list[str]:
        """``argv`` as run inside ``host``'s namespace."""
        return ["ip", "netns", "exec", self.hosts[host].namespace, *argv]

    def run(
        self, host: str, *argv: str, check: bool = True, timeout: float = 60.0, env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` in ``host`` and wait for it; its output captured as text."""
        result = subprocess.run(
            self.command(host, argv), capture_output=True, text=True, timeout=timeout, env=env, check=False
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} on {host} failed ({result.returncode}): {result.stderr.strip()}")
        return result

    def spawn(
        self, host: str, argv: Sequence[str], log: Path, env: dict[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in ``host``, in a session of its own, its output in ``log``; it is
        killed by :meth:`down` at the latest."""
        out: IO[bytes]
        with log.open("ab") as out:
            proc = subprocess.Popen(
                self.command(host, argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                env=env, start_new_session=True,
            )  # fmt: skip
        self._spawned.append(proc)
        return proc

    # -- network faults -------------------------------------------------------------------------

    def cut(self, name: str) -> None:
        """Partition ``name``: its switch port goes down, nothing reaches it or leaves it."""
        _run("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "down")

    def heal(self, name: str) -> None:
        """End the partition of ``name``."""
        _run("ip", "-n", self.switch, "link", "set", self.hosts[name].port, "up")

    @contextlib.contextmanager
    def fault(self, name: str, *rules: Sequence[str]) -> Iterator[None]:
        """Commands run in ``name`` to make a fault (``iptables -A ...``, ``tc qdisc add ...``);
        undone on leaving: iptables rules flushed, the root qdisc of eth0 removed."""
        try:
            for rule in rules:
                self.run(name, *rule)
            yield
        finally:
            self.run(name, "iptables", "-F", check=False)
            self.run(name, "tc", "qdisc", "del", "dev", "eth0", "root", check=False)

    def has_netem(self) -> bool:
        """Whether this kernel has the ``netem`` qdisc (probed on the head's loopback)."""
        added = self.run("head", "tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms", check=False)
        if added.returncode != 0:
            return False
        self.run("head", "tc", "qdisc", "del", "dev", "lo", "root", check=False)
        return True
