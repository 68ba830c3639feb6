"""Writing damo's ``json`` and ``json_compressed`` records, one snapshot at a time.

The text is exactly ``json.dumps(record_to_damo_kvpairs(rec), indent=4)`` (what damo writes), but
made snapshot by snapshot from the record's columns (a mapped record is decoded a range of
snapshots at a time) and written, or compressed, as it is made: memory stays that of one range
of snapshots whatever the record's size (building the whole list of dicts first took ~3.3 KB
per region). The memory footprints go to damo's side file ``<record>.mem_footprint``.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any, BinaryIO, cast

import numpy as np

from pydamon.record.footprint import SYSTEM_PAGE_SIZE
from pydamon.record.model import UNKNOWN, Footprint, Record

#: zlib level of ``json_compressed``: zlib's default, as damo (level 1 would take half the time
#: of the compression, a third of the whole export, for files ~30% bigger).
COMPRESS_LEVEL = 6
#: Text handed to the file (or compressor) at a time.
_FLUSH_BYTES = 1 << 20


def _target_header(rec: Record, tidx: int) -> dict[str, Any]:
    idxs = np.flatnonzero(rec.snap_target == tidx)
    first = int(idxs[0]) if len(idxs) else None
    sample_us = int(rec.snap_sample_us[first]) if first is not None else 5000
    aggr_us = int(rec.snap_aggr_us[first]) if first is not None else 100000
    attrs = rec.meta.get("attrs") or {}
    ops_update_us = int(attrs.get("ops_update_interval_us", 1000000))
    target_id = rec.target_id_of(tidx)
    return {
        "kdamond_idx": 0,
        "context_idx": 0,
        "intervals": {
            "sample_us": str(sample_us),
            "aggr_us": str(aggr_us),
            "ops_update_us": str(ops_update_us),
        },
        "scheme_idx": None,
        "target_id": target_id if target_id is not None else tidx,
        "scheme_filters": [],
        "snapshots": [],
    }


def _target_indexes(rec: Record) -> list[int]:
    return rec.target_indexes() or [t.index for t in rec.targets]


def record_to_damo_kvpairs(rec: Record) -> list[dict[str, Any]]:
    """damo's JSON record list as Python objects (for small records: a whole record this way
    takes ~3.3 KB per region; :func:`damo_json_pieces` streams the same text)."""
    return json.loads("".join(damo_json_pieces(rec, indent=None)))


def _templates(indent: int | None) -> tuple[str, str, str, str]:
    """(snapshot head, region, snapshot tail, separator) %-templates at ``indent``."""
    if indent is None:
        region = (
            '{"start": "%d", "end": "%d", "nr_accesses": {"samples": %d, "percent": %d}, '
            '"age": {"usec": "%d", "aggr_intervals": "%d"}, "sz_filter_passed": "0"}'
        )
        head = '{"start_time": "%d", "end_time": "%d", "regions": ['
        return head, region, '], "total_bytes": "%d"}', ", "
    u = " " * indent

    def at(level: int) -> str:
        return "\n" + u * level

    region = (
        "{" + at(6) + '"start": "%d",' + at(6) + '"end": "%d",' + at(6) + '"nr_accesses": {'
        + at(7) + '"samples": %d,' + at(7) + '"percent": %d' + at(6) + "}," + at(6)
        + '"age": {' + at(7) + '"usec": "%d",' + at(7) + '"aggr_intervals": "%d"' + at(6)
        + "}," + at(6) + '"sz_filter_passed": "0"' + at(5) + "}"
    )  # fmt: skip
    head = "{" + at(4) + '"start_time": "%d",' + at(4) + '"end_time": "%d",'
    head += at(4) + '"regions": ['
    tail = at(4) + "]," + at(4) + '"total_bytes": "%d"' + at(3) + "}"
    return head, region, tail, "," + at(5)


def _formatter(template: str) -> Callable[[Iterable[tuple[int, ...]]], list[str]]:
    """``lambda rows: [template % row for row in rows]`` as a compiled f-string comprehension:
    ~40% faster, and regions are what the export spends its time on."""
    names = ("s", "e", "n", "p", "u", "a")
    body = template.replace("{", "{{").replace("}", "}}")
    for name in names:
        body = body.replace("%d", "{" + name + "}", 1)
    src = f"def rows_text(rows):\n    return [f{body!r} for {', '.join(names)} in rows]\n"
    scope: dict[str, Any] = {}
    exec(compile(src, "<damo region template>", "exec"), scope)  # our own template only
    return cast(Callable[[Iterable[tuple[int, ...]]], list[str]], scope["rows_text"])


def damo_json_pieces(rec: Record, indent: int | None = 4) -> Iterator[str]:
    """The text of ``json.dumps(<damo's record list of rec>, indent=indent)``, in pieces of
    about one snapshot (nothing of the whole record is held at once)."""
    head, region, tail, sep = _templates(indent)
    regions_text = _formatter(region)
    u = "" if indent is None else " " * indent
    nl = "" if indent is None else "\n"
    item_sep = ", " if indent is None else ",\n" + u * 3
    targets = _target_indexes(rec)
    if not targets:
        yield "[]"
        return
    yield "[" + nl
    for k, tidx in enumerate(targets):
        text = json.dumps(_target_header(rec, tidx), indent=indent)
        if indent is not None:
            text = "\n".join(u + line for line in text.split("\n"))
        before, after = text.rsplit('"snapshots": []', 1)
        yield before + '"snapshots": '
        first = True
        for part in rec.chunks():
            mine = np.flatnonzero(part.snap_target == tidx)
            if not len(mine):
                continue
            starts, ends = part.starts, part.ends
            nr, age = part.nr_accesses, part.age
            for i in mine.tolist():
                lo, hi = int(part.region_offsets[i]), int(part.region_offsets[i + 1])
                s_aggr = int(part.snap_aggr_us[i])
                max_nr = max(s_aggr // (int(part.snap_sample_us[i]) or 1), 1)
                n = nr[lo:hi].astype(np.int64)
                a = age[lo:hi].astype(np.int64)
                pct, usec = (n * 100 // max_nr).tolist(), (a * s_aggr).tolist()
                rows = zip(starts[lo:hi].tolist(), ends[lo:hi].tolist(), n.tolist(), pct, usec,
                           a.tolist())  # fmt: skip
                body = sep.join(regions_text(rows))
                if hi > lo and indent is not None:
                    body = nl + u * 5 + body
                elif indent is not None:
                    body = ""
                snap_start = int(part.snap_start_us[i]) * 1000
                snap_end = int(part.snap_end_us[i]) * 1000
                total = int((ends[lo:hi] - starts[lo:hi]).sum())
                close = (tail if hi > lo else tail.replace(nl + u * 4 + "]", "]", 1)) % total
                opening = ("[" + nl + u * 3) if first else item_sep
                first = False
                yield opening + head % (snap_start, snap_end) + body + close
        yield ("[]" if first else nl + u * 2 + "]") + after
        yield ("," + (nl or " ")) if k + 1 < len(targets) else nl
    yield "]"


def write_damo_record(
    rec: Record, path: str, fmt: str = "json_compressed", *, footprints: bool = True
) -> None:
    """Write ``rec`` in damo's ``json`` or ``json_compressed`` form (temp + rename), streamed
    snapshot by snapshot."""
    if fmt not in ("json", "json_compressed"):
        raise ValueError(f"unsupported damo format {fmt!r}; use json or json_compressed")
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            _write_text(f, damo_json_pieces(rec), compress=fmt == "json_compressed")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    if footprints and np.any(rec.rss_bytes != UNKNOWN) | np.any(rec.sys_free_bytes != UNKNOWN):
        _atomic_write(path + ".mem_footprint", json.dumps(_damo_footprints(rec)).encode())


def _write_text(out: BinaryIO, pieces: Iterator[str], *, compress: bool) -> None:
    packer = zlib.compressobj(COMPRESS_LEVEL) if compress else None
    pending: list[str] = []
    size = 0

    def flush() -> None:
        data = "".join(pending).encode()
        out.write(packer.compress(data) if packer else data)
        pending.clear()

    for piece in pieces:
        pending.append(piece)
        size += len(piece)
        if size >= _FLUSH_BYTES:
            flush()
            size = 0
    flush()
    if packer is not None:
        out.write(packer.flush())


def _damo_footprints(rec: Record) -> list[dict[str, Any]]:
    base = float(rec.meta.get("start_time_unix", 0.0))
    t0 = int(rec.snap_end_us.min()) if rec.nr_snapshots else 0
    entries = []
    for i in range(rec.nr_snapshots):
        fp: Footprint = rec.footprint(i)
        tidx = int(rec.snap_target[i])
        pid = next((t.pid for t in rec.targets if t.index == tidx), None)
        fps: list[dict[str, Any]] = []
        if pid is not None and fp.rss_bytes != UNKNOWN:
            fps.append(
                {
                    "pid": pid,
                    "footprint": {
                        "size": max(fp.vsz_bytes, 0) // SYSTEM_PAGE_SIZE,
                        "resident": fp.rss_bytes // SYSTEM_PAGE_SIZE,
                        "shared": 0,
                        "trs": 0,
                        "lrs": 0,
                        "drs": 0,
                        "dt": 0,
                    },
                }
            )
        if fp.sys_free_bytes != UNKNOWN:
            fps.append(
                {
                    "pid": None,
                    "footprint": {
                        "total": max(fp.sys_total_bytes, 0) // 1024,
                        "free": fp.sys_free_bytes // 1024,
                        "available": None,
                        "buffers": None,
                        "cached": None,
                    },
                }
            )
        entries.append({"time": base + (int(rec.snap_end_us[i]) - t0) / 1e6, "footprints": fps})
    return entries


def _atomic_write(path: str, data: bytes) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
