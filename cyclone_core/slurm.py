"""A controller's defaults inside a Slurm allocation, from the ``SLURM_*`` environment.

Pure: the environment and the host name come in, settings go out.  A controller started by
``srun`` takes, when neither its command line nor its configuration says otherwise:

- the id ``<host>-<job>.<step>.<task>`` (``SLURM_JOB_ID``, ``SLURM_STEP_ID``, ``SLURM_PROCID``):
  unique per task of the job, and the same when the step's task is started again, so a
  restarted controller takes over its own registration at the master at once;
- ``SLURM_CPUS_PER_TASK`` workers, else ``SLURM_CPUS_ON_NODE`` (the CPUs of the allocation on
  this node).

Outside a job step (no ``SLURM_STEP_ID``: the batch script itself, an ``salloc`` shell) the id
stays ``<host>-<pid>``, since such a shell may start several controllers; the workers still
follow the allocation.  Values that are not what Slurm writes are one error line naming the
variable.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import attrs

from cyclone_core.errors import UsageError
from cyclone_core.settings import ControllerSettings

__all__ = ("allocation_id", "allocation_workers", "controller_settings")

_NUMBER = re.compile(r"[0-9]{1,10}")


def _number(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name, "").strip()
    if not value:
        return None
    if not _NUMBER.fullmatch(value):
        raise UsageError(f"{name}={value!r} in the environment is not a whole number")
    return int(value)


def allocation_id(env: Mapping[str, str], host: str) -> str | None:
    """``<host>-<job>.<step>.<task>`` for a task of a Slurm job step, else None."""
    job, step, task = (_number(env, name) for name in ("SLURM_JOB_ID", "SLURM_STEP_ID", "SLURM_PROCID"))
    if job is None or step is None or task is None:
        return None
    return f"{host}-{job}.{step}.{task}"


def allocation_workers(env: Mapping[str, str]) -> int | None:
    """The CPUs Slurm allocated to this task (per task, else on this node), or None."""
    for name in ("SLURM_CPUS_PER_TASK", "SLURM_CPUS_ON_NODE"):
        cpus = _number(env, name)
        if cpus:
            return cpus
    return None


def controller_settings(settings: ControllerSettings, env: Mapping[str, str], host: str) -> ControllerSettings:
    """``settings`` with the allocation's id and workers where they are unset (empty id, 0
    workers): what the command line or a configuration file set always wins."""
    controller_id = settings.id or allocation_id(env, host) or ""
    workers = settings.workers or allocation_workers(env) or 0
    if (controller_id, workers) == (settings.id, settings.workers):
        return settings
    return attrs.evolve(settings, id=controller_id, workers=workers)
