"""Cyclone plugin for Lustre OSTs: discovery, per-OST I/O probes and OST data migration.

The modules, by what they do:

``lustre``
    :class:`~cyclone_lustre_ost.lustre.LustreTools`, typed wrappers around ``lfs`` and ``lctl``
    with a deadline on every call, and pure parsers for their output formats.
``discovery``
    which OSTs a file system has and which of them to probe (ClusterShell RangeSet selection),
    and whether a path is on Lustre at all.
``local``
    :class:`~cyclone_lustre_ost.local.LustreLocal`, the controller's own
    ``[controller.local.lustre]`` settings: the tools, ``sudo`` and the path roots the tasks
    may use.
``probe``
    the ``lustre-ost-io`` task: write and read back a file pinned to one OST.
``monitor``
    the ``lustre-ost-io`` generator: a round of probes over the selected OSTs every interval.
``migrate``
    the ``lustre-ost-migrate`` generator and task: drain full OSTs into emptier ones.
``testing``
    stand-in ``lfs``/``lctl`` programs and a pytest fixture that builds a fake file system.

This package imports nothing on its own so that the stand-in tools start quickly.
"""
