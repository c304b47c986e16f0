"""File-creation checks for Cyclone: per Lustre MDT and OST, or any directory's create latency."""

from __future__ import annotations

from cyclone_file_create.check import CheckStatus
from cyclone_file_create.generator import FileCreateGenerator
from cyclone_file_create.task import FileCreateTask

__all__ = ("CheckStatus", "FileCreateGenerator", "FileCreateTask")
