"""Soak: jobs run to the end while processes are killed at random; nothing lost, doubled or wrong.

    python benchmarks/soak.py --minutes 10 [--tasks 30000] [--controllers 3] [--seed N]

Each job is a real ``cyclone master`` (CurveZMQ over TCP on loopback, a journal, the ``jsonl``
sink) and ``--controllers`` real ``cyclone controller`` processes of two workers each.  The
generator is a ``sweep`` of ``--tasks`` ``command`` tasks, ``expr N * 7`` for N = 1..tasks, so
that each result's content is known: its stdout must be 7N.  While a job runs, at random
intervals (``--every`` seconds on average), one of these is killed with SIGKILL:

- a random controller (started again a moment later, under the same id);
- a random worker process of a random controller (the controller replaces it);
- the master (started again on its journal a moment later: it resumes the run).

Jobs follow one another until ``--minutes`` have passed (the last one runs to its end, with
the killing stopped once time is up).  After each job the sink's file is read: a task whose
result is missing is *lost*, a task with more than one result line is *doubled*, a result that
is not ``ok`` with stdout 7N is *wrong*.  Prints those counts per job and in total, and exits
1 unless all three are 0.  A job that does not finish within ``--job-timeout`` seconds (after
its killing stopped) is reported as stuck, with its directory kept for a look.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from throughput import free_port

#: The task's program: ``expr N * 7``.
EXPR = shutil.which("expr") or "/usr/bin/expr"


def make_keys(workdir: Path, controllers: int) -> tuple[Path, list[Path]]:
    """A master key directory, and one controller key directory per controller, each admitted
    and pinning the master's key."""
    master = workdir / "master-keys"
    subprocess.run(["cyclone", "keys", "init", "--dir", str(master)], check=True, capture_output=True)
    dirs = []
    for number in range(1, controllers + 1):
        directory = workdir / f"controller-{number}-keys"
        public = subprocess.run(
            ["cyclone", "keys", "new", "--dir", str(directory)], check=True, capture_output=True, text=True
        ).stdout.strip()
        allow = ["cyclone", "keys", "allow", public, "--ids", f"soak-{number}", "--dir", str(master)]
        subprocess.run(allow, check=True, capture_output=True)
        pin = ["cyclone", "keys", "pin", str(master / "master.public"), "--dir", str(directory)]
        subprocess.run(pin, check=True, capture_output=True)
        dirs.append(directory)
    return master, dirs


class Job:
    """One job: its configuration files, its master and controllers, and the killing."""

    def __init__(self, workdir: Path, number: int, tasks: int, keys: tuple[Path, list[Path]]) -> None:
        self.dir = workdir / f"job-{number}"
        self.dir.mkdir()
        self.tasks = tasks
        self.sink = self.dir / "results.jsonl"
        self.log = (self.dir / "processes.log").open("ab")
        endpoint = f"tcp://127.0.0.1:{free_port()}"
        self.master_config = self.dir / "master.toml"
        self.master_config.write_text(
            f'[master]\nbind = "{endpoint}"\njournal = "{self.dir}/journal.sqlite"\nkeys = "{keys[0]}"\n'
            "controller_timeout = 5.0\nheartbeat_interval = 1.0\n"
            '[generator]\nname = "sweep"\n'
            f'options = {{ task = "command", argv = ["{EXPR}", "{{n}}", "*", "7"], grid = {{ n = "1-{tasks}" }} }}\n'
            f'[sinks.jsonl]\npath = "{self.sink}"\n'
        )
        self.controller_configs = []
        for number, key_dir in enumerate(keys[1], start=1):
            config = self.dir / f"controller-{number}.toml"
            config.write_text(
                f'[controller]\nmaster = "{endpoint}"\nid = "soak-{number}"\nworkers = 2\nkeys = "{key_dir}"\n'
                "heartbeat_interval = 1.0\nmaster_timeout = 5.0\nreconnect_interval = 0.2\nreconnect_max = 2.0\n"
                f'[controller.local.command]\nexecutables = ["{EXPR}"]\n'
            )
            self.controller_configs.append(config)
        self.master: subprocess.Popen[bytes] | None = None
        self.controllers: list[subprocess.Popen[bytes] | None] = [None] * len(keys[1])
        self.kills: Counter[str] = Counter()
        self.restart_at: dict[int, float] = {}  # controllers that exited on their own: when to start them again
        self.refusals: dict[int, int] = {}  # refused starts in a row, per controller

    def _start(self, what: str, config: Path) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            ["cyclone", what, "--config", str(config)], stdout=self.log, stderr=self.log, stdin=subprocess.DEVNULL
        )

    def start(self) -> None:
        self.master = self._start("master", self.master_config)
        for index in range(len(self.controllers)):
            self.start_controller(index)

    def start_controller(self, index: int) -> None:
        self.restart_at.pop(index, None)
        self.controllers[index] = self._start("controller", self.controller_configs[index])

    def restart_master(self) -> None:
        self.master = self._start("master", self.master_config)

    def kill_one(self, rng: random.Random) -> str:
        """SIGKILL a random controller, worker or the master; start what must be started again.
        Returns what was killed."""
        assert self.master is not None
        action = rng.choices(["controller", "worker", "master"], weights=[2, 4, 1])[0]
        if action == "master":
            self.master.kill()
            self.master.wait()
            time.sleep(rng.uniform(0.0, 2.0))
            self.restart_master()
        elif action == "controller":
            index = rng.randrange(len(self.controllers))
            process = self.controllers[index]
            assert process is not None
            process.kill()
            process.wait()
            time.sleep(rng.uniform(0.0, 2.0))
            self.start_controller(index)
        else:
            # The controller's grandchildren: its fork server's children (tasks' own
            # processes are further down, and left alone).
            workers = [
                worker
                for process in self.controllers
                if process is not None and process.poll() is None
                for server in _descendants(process.pid)
                if _parent(server) == process.pid
                for worker in _descendants(server)
                if _parent(worker) == server
            ]
            if not workers:
                return "nothing (no worker up)"
            worker = rng.choice(workers)
            with contextlib.suppress(ProcessLookupError):  # gone already
                os.kill(worker, signal.SIGKILL)
        self.kills[action] += 1
        return action

    def watch_controllers(self) -> None:
        """A controller that exited on its own while the master runs is started again a second
        later, as systemd would: one that gave up on a master that was down, or one started
        again after a kill while the master still held its id (refused, exit code 2, until the
        master declares the killed one lost).  Refused for a minute in a row: a configuration
        error, and the soak stops."""
        now = time.monotonic()
        for index, process in enumerate(self.controllers):
            # Exit code 0: the master told it the run is over.
            if process is None or process.poll() in (None, 0) or not self.master_running():
                continue
            if index not in self.restart_at:
                self.restart_at[index] = now + 1.0
                self.refusals[index] = self.refusals.get(index, 0) + 1 if process.returncode == 2 else 0
                if self.refusals[index] > 60:
                    raise SystemExit(f"controller soak-{index + 1} refused for a minute: see {self.dir}/processes.log")
            elif now >= self.restart_at[index]:
                del self.restart_at[index]
                self.start_controller(index)

    def master_running(self) -> bool:
        return self.master is not None and self.master.poll() is None

    def stop(self) -> None:
        for process in [self.master, *self.controllers]:
            if process is not None and process.poll() is None:
                process.kill()
                process.wait()
        self.log.close()

    def check(self) -> tuple[int, int, int, list[str]]:
        """Lost, doubled and wrong counts from the sink's file, and a few examples."""
        seen: Counter[int] = Counter()
        wrong: list[str] = []
        with self.sink.open(encoding="utf-8") as file:
            for line in file:
                record = json.loads(line)
                payload = record.get("payload") or {}
                n = (payload.get("params") or {}).get("n")
                if not isinstance(n, int):
                    wrong.append(f"{record.get('task_id')}: no parameter n in {str(payload)[:80]}")
                    continue
                seen[n] += 1
                stdout = payload.get("stdout")
                if record.get("status") != "ok" or stdout is None or stdout.strip() != str(7 * n):
                    wrong.append(
                        f"n={n}: status {record.get('status')}, stdout {stdout!r}, error {record.get('error')}"
                    )
        lost = [n for n in range(1, self.tasks + 1) if n not in seen]
        doubled = [n for n, count in seen.items() if count > 1]
        examples = [f"lost n={n}" for n in lost[:3]] + [f"doubled n={n}" for n in doubled[:3]] + wrong[:3]
        return len(lost), len(doubled), len(wrong), examples


def _parent(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(pid: int) -> list[int]:
    """Process ids below ``pid`` (its children, theirs, ...), from /proc."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def run_job(job: Job, rng: random.Random, deadline: float, every: float, timeout: float) -> bool:
    """Run ``job``, killing at random until ``deadline``; whether it finished."""
    job.start()
    next_kill = time.monotonic() + rng.expovariate(1 / every)
    stopped_at: float | None = None
    while True:
        now = time.monotonic()
        if job.master is not None and job.master.poll() == 0:
            break
        if job.master is not None and job.master.poll() is not None:
            print(f"  master exited with code {job.master.returncode}; started again", flush=True)
            job.restart_master()
        job.watch_controllers()
        if now < deadline:
            if now >= next_kill:
                killed = job.kill_one(rng)
                print(f"  {time.strftime('%H:%M:%S')} killed {killed}", flush=True)
                next_kill = time.monotonic() + rng.expovariate(1 / every)
        else:
            stopped_at = stopped_at or now
            if now - stopped_at > timeout:
                return False
        time.sleep(0.1)
    for process in job.controllers:  # the master said Shutdown: they leave on their own
        if process is not None:
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:  # started again just as the master ended
                process.kill()
                process.wait()
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=3.0, help="how long to keep killing and starting jobs")
    parser.add_argument("--tasks", type=int, default=30_000, help="tasks per job")
    parser.add_argument("--controllers", type=int, default=3)
    parser.add_argument("--every", type=float, default=4.0, help="seconds between kills, on average")
    parser.add_argument("--job-timeout", type=float, default=300.0, help="seconds a job may take after the killing")
    parser.add_argument("--seed", type=int, help="for the random choices (default: from the clock, printed)")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else int(time.time())
    rng = random.Random(seed)
    print(f"soak: {args.minutes} minutes, {args.tasks:,} tasks a job, {args.controllers} controllers, seed {seed}")
    workdir = Path(tempfile.mkdtemp(prefix="cyclone-soak-"))
    keys = make_keys(workdir, args.controllers)
    deadline = time.monotonic() + args.minutes * 60
    totals = Counter[str]()
    kills = Counter[str]()
    keep = False
    number = 0
    try:
        while time.monotonic() < deadline:
            number += 1
            job = Job(workdir, number, args.tasks, keys)
            started = time.monotonic()
            try:
                finished = run_job(job, rng, deadline, args.every, args.job_timeout)
            finally:
                job.stop()
            kills.update(job.kills)
            if not finished:
                print(
                    f"job {number}: STUCK (not done {args.job_timeout:.0f} s after the killing stopped): see {job.dir}"
                )
                totals["stuck"] += 1
                keep = True
                break
            lost, doubled, wrong, examples = job.check()
            totals.update(lost=lost, doubled=doubled, wrong=wrong, tasks=args.tasks)
            print(
                f"job {number}: {args.tasks:,} tasks in {time.monotonic() - started:.0f} s, "
                f"killed {dict(job.kills) or 'nothing'}: lost {lost}, doubled {doubled}, wrong {wrong}",
                flush=True,
            )
            for example in examples:
                print(f"  {example}")
            if lost or doubled or wrong:
                keep = True
                print(f"  kept: {job.dir}")
    except BaseException:
        keep = True
        raise
    finally:
        if keep:
            print(f"kept for a look: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"soak over: {number} job(s), {totals['tasks']:,} tasks, killed {dict(kills)}; "
        f"lost {totals['lost']}, doubled {totals['doubled']}, wrong {totals['wrong']}"
        + (f", {totals['stuck']} job stuck" if totals["stuck"] else "")
        + f" (seed {seed})"
    )
    sys.exit(1 if any(totals[k] for k in ("lost", "doubled", "wrong", "stuck")) else 0)


if __name__ == "__main__":
    main()
