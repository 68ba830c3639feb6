"""Memory footprints from /proc: a process's RSS/VSZ (``statm``) and the system's free memory."""

from __future__ import annotations

import os

from pydamon.record.model import UNKNOWN, Footprint

#: The unit of /proc/PID/statm and of damo's footprint records: the system's page size.
SYSTEM_PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def read_footprint(pid: int | None) -> Footprint:
    """The footprint now; fields that cannot be read (process gone, no /proc) stay UNKNOWN."""
    fp = Footprint()
    if pid is not None:
        try:
            with open(f"/proc/{pid}/statm") as f:
                fields = f.read().split()
            fp.vsz_bytes = int(fields[0]) * SYSTEM_PAGE_SIZE
            fp.rss_bytes = int(fields[1]) * SYSTEM_PAGE_SIZE
        except (OSError, ValueError, IndexError):
            pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemFree:"):
                    fp.sys_free_bytes = int(line.split()[1]) * 1024
                elif line.startswith("MemTotal:"):
                    fp.sys_total_bytes = int(line.split()[1]) * 1024
                if fp.sys_free_bytes != UNKNOWN and fp.sys_total_bytes != UNKNOWN:
                    break
    except (OSError, ValueError, IndexError):
        pass
    return fp
