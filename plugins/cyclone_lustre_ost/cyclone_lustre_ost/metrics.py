"""Metric labels and values shared by the Lustre probes of this plugin and cyclone-file-create.

Per-OST and per-MDT series carry the labels the Lustre exporters admins already run use
(HPE ``lustre_exporter``, whamcloud ``lustrefs-exporter``, GSI ``lustre_exporter``):
``component`` (``ost``, ``mdt``) and ``target`` (``<fsname>-OST000a``), so a PromQL join such as
``... * on (component, target) group_left lustre_capacity_kilobytes`` works.  ``fs`` adds the
file system name.  The Cyclone 2.x series (``cyclone_lustre_file_creation_check`` and
``_error``) keep their 2.x labels, whose ``target`` is the file system name.
"""

from __future__ import annotations

__all__ = ("PROBE_STATUS", "mdt_label", "target_labels", "target_name")

#: Values of ``cyclone_lustre_ost_probe_status``: alert on ``== 0``; drained and retired OSTs
#: are administrative states, not faults, and have values of their own.
PROBE_STATUS = {"failed": 0.0, "ok": 1.0, "drained": 2.0, "retired": 3.0}


def target_name(fsname: str, component: str, index: int) -> str:
    """The exporters' ``target``: ``("testfs", "ost", 10)`` -> ``"testfs-OST000a"`` (hex)."""
    return f"{fsname}-{component.upper()}{index:04x}"


def mdt_label(fsname: str, index: int) -> str:
    """``("testfs", 1)`` -> ``"testfs-MDT0001"``."""
    return target_name(fsname, "mdt", index)


def target_labels(fsname: str, component: str, index: int) -> dict[str, str]:
    """``{"fs": ..., "component": ..., "target": "<fs>-OST000a"}`` for one target."""
    return {"fs": fsname, "component": component, "target": target_name(fsname, component, index)}
