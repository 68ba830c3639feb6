"""Record files: pydamon's streamed binary format, damo's JSON formats, Parquet export.

- :func:`read_record` reads any supported file (format detected from its first bytes).
- :class:`RecordWriter` streams snapshots to a pydamon record; :func:`write_record`,
  :func:`export_record` write a whole :class:`Record` in pydamon, damo or Parquet form.
"""

from __future__ import annotations

import os

from pydamon.record.binfmt import (
    RecordReader,
    RecordWriter,
    is_pydamon_record,
    write_record,
)
from pydamon.record.damo import detect_damo_format, read_damo_record, write_damo_record
from pydamon.record.footprint import read_footprint
from pydamon.record.model import (
    UNKNOWN,
    CorruptColumn,
    Damage,
    Footprint,
    Record,
    RecordError,
    TargetInfo,
)

#: Output formats of :func:`export_record` (and ``pydamon record --output_type``).
EXPORT_FORMATS = ("pydamon", "json_compressed", "json", "parquet")


def read_record(path: str | os.PathLike[str], *, verify: bool = False) -> Record:
    """Read a pydamon or damo record file. Raises :class:`RecordError` with a one-line reason.

    Damaged parts are skipped (``Record.damage``, ``Record.warnings``). A mapped (version 2)
    record checks its columns when they are first used and raises :class:`CorruptColumn` then;
    ``verify=True`` checks them all at once and leaves the damaged snapshots out."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file") from None
    except IsADirectoryError:
        raise RecordError(f"{path}: is a directory, not a record file") from None
    except PermissionError:
        raise RecordError(f"{path}: permission denied (try sudo or chmod)") from None
    if not head:
        raise RecordError(f"{path}: empty file, not a record")
    if is_pydamon_record(head):
        return RecordReader(path).read(verify=verify)
    if detect_damo_format(head):
        return read_damo_record(path)
    if head[:4] == b"PAR1":
        raise RecordError(f"{path}: a Parquet export; read it with pyarrow/DuckDB, not pydamon")
    raise RecordError(f"{path}: unknown record format (neither pydamon nor damo json)")


def export_record(rec: Record, path: str, fmt: str) -> None:
    """Write ``rec`` to ``path`` as one of :data:`EXPORT_FORMATS`."""
    if fmt == "pydamon":
        write_record(path, rec)
    elif fmt in ("json", "json_compressed"):
        write_damo_record(rec, path, fmt)
    elif fmt == "parquet":
        from pydamon.record.parquet import write_parquet

        write_parquet(rec, path)
    else:
        raise ValueError(f"unknown record format {fmt!r}; use one of {', '.join(EXPORT_FORMATS)}")


__all__ = [
    "EXPORT_FORMATS",
    "UNKNOWN",
    "CorruptColumn",
    "Damage",
    "Footprint",
    "Record",
    "RecordError",
    "RecordReader",
    "RecordWriter",
    "TargetInfo",
    "export_record",
    "read_damo_record",
    "read_footprint",
    "read_record",
    "write_damo_record",
    "write_record",
]
