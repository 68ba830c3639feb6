"""Stream a running context's snapshots (and footprints) into a record file.

>>> rec = Recorder(ctx, "pydamon.data", meta={"ops": "sim"})   # doctest: +SKIP
>>> ctx.run(duration_us=10_000_000); rec.close()                # doctest: +SKIP
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from pydamon.core.context import Context
from pydamon.record.binfmt import RecordWriter
from pydamon.record.footprint import SYSTEM_PAGE_SIZE, read_footprint
from pydamon.record.model import Footprint, Record


class Recorder:
    """Adds an ``after_aggregation`` callback to ``ctx`` that appends every target's snapshot.

    Footprints (target RSS/VSZ from ``/proc/PID/statm``, system free memory) are read at each
    aggregation unless ``footprints=False`` (simulations, whose processes do not exist).
    ``on_snapshot(ctx, record_part)`` is called after each write (progress, status files).
    ``lock``/``holder``: see :class:`pydamon.record.binfmt.RecordWriter` (the file is owned).
    """

    def __init__(
        self,
        ctx: Context,
        path: str | os.PathLike[str],
        *,
        meta: dict[str, Any] | None = None,
        footprints: bool = True,
        compress: int = 0,
        on_snapshot: Callable[[Context, Record], None] | None = None,
        lock: bool = True,
        holder: str = "pydamon",
    ) -> None:
        self.ctx = ctx
        self.path = os.fspath(path)
        self.footprints = footprints
        self.on_snapshot = on_snapshot
        full_meta = {
            "start_time_unix": time.time(),
            "start_clock_us": ctx.clock.now_us(),
            "ops": getattr(ctx.ops, "name", None),
            "attrs": {
                "sample_interval_us": ctx.attrs.sample_interval_us,
                "aggr_interval_us": ctx.attrs.aggr_interval_us,
                "ops_update_interval_us": ctx.attrs.ops_update_interval_us,
                "min_nr_regions": ctx.attrs.min_nr_regions,
                "max_nr_regions": ctx.attrs.max_nr_regions,
            },
            "seed": ctx.seed,
            "page_size": SYSTEM_PAGE_SIZE,
            "hostname": os.uname().nodename,
        }
        from pydamon import __version__

        full_meta["pydamon_version"] = __version__
        full_meta.update(meta or {})
        full_meta.setdefault(
            "targets",
            [
                {"index": i, "target_id": t.target_id, "pid": t.pid, "name": ""}
                for i, t in enumerate(ctx.targets)
            ],
        )
        self.writer = RecordWriter(
            self.path, full_meta, compress=compress, lock=lock, holder=holder
        )
        self.nr_snapshots = 0
        self.last_part: Record | None = None
        ctx.add_callback("after_aggregation", self._after_aggregation)

    def _after_aggregation(self, ctx: Context) -> None:
        snaps = ctx.snapshots()
        fps = [read_footprint(t.pid) if self.footprints else Footprint() for t in ctx.targets]
        part = Record.from_snapshots(snaps, footprints=fps)
        self.writer.add(part)
        self.nr_snapshots += part.nr_snapshots
        self.last_part = part
        if self.on_snapshot is not None:
            self.on_snapshot(ctx, part)

    def close(self, summary: dict[str, Any] | None = None) -> None:
        """Finalize the file (consolidate + footer, atomic rename). Safe to call twice."""
        try:
            self.ctx.remove_callback("after_aggregation", self._after_aggregation)
        except ValueError:
            pass
        info = {
            "nr_aggregations": self.ctx.nr_aggregations,
            "monitor_cpu_s": self.ctx.monitor_cpu_s,
            "end_time_unix": time.time(),
        }
        info.update(summary or {})
        self.writer.close(info)
