"""Parquet export (the ``parquet`` extra, pyarrow): one row per region of every snapshot.

Columns: ``snapshot, target_index, target_id, start_us, end_us, sample_interval_us,
aggr_interval_us, rss_bytes, vsz_bytes, sys_free_bytes, region_start, region_end, size_bytes,
nr_accesses, access_rate, age`` -- ready for DuckDB (``SELECT ... FROM 'rec.parquet'``), pandas
or Spark.
"""

from __future__ import annotations

import os

import numpy as np

from pydamon.extras import install_hint
from pydamon.record.model import Record


def write_parquet(rec: Record, path: str) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise RuntimeError(
            f"Parquet export needs pyarrow: {install_hint('pyarrow', 'parquet')}"
        ) from None
    per_region = rec.region_snapshot
    sizes = rec.sizes
    max_nr = rec.max_nr_accesses[per_region]
    ids = np.asarray(
        [rec.target_id_of(int(t)) if rec.target_id_of(int(t)) is not None else -1
         for t in rec.snap_target], np.int64
    ).reshape(rec.nr_snapshots)  # fmt: skip
    table = pa.table(
        {
            "snapshot": per_region,
            "target_index": rec.snap_target[per_region],
            "target_id": ids[per_region],
            "start_us": rec.snap_start_us[per_region],
            "end_us": rec.snap_end_us[per_region],
            "sample_interval_us": rec.snap_sample_us[per_region],
            "aggr_interval_us": rec.snap_aggr_us[per_region],
            "rss_bytes": rec.rss_bytes[per_region],
            "vsz_bytes": rec.vsz_bytes[per_region],
            "sys_free_bytes": rec.sys_free_bytes[per_region],
            "region_start": rec.starts,
            "region_end": rec.ends,
            "size_bytes": sizes,
            "nr_accesses": rec.nr_accesses,
            "access_rate": rec.nr_accesses / max_nr,
            "age": rec.age,
        }
    )
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        pq.write_table(table, tmp, compression="zstd")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
