"""damo's record formats: ``json``, ``json_compressed`` (zlib of the JSON) and ``perf_script``.

damo's JSON is a list of per-target records ``{kdamond_idx, context_idx, intervals{sample_us,
aggr_us, ops_update_us}, scheme_idx, target_id, scheme_filters, snapshots[{start_time, end_time
(ns), regions[{start, end, nr_accesses{samples, percent}, age{usec, aggr_intervals},
sz_filter_passed}], total_bytes}]}``. damo writes numbers as plain strings ("raw" form) but
accepts human forms ("1,024", "4 KiB", "1 s 200 ms"); both are read here. The memory footprints
damo keeps in a side file ``<record>.mem_footprint`` are read and written too.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable
from typing import Any

import numpy as np

from pydamon.core.snapshot import Snapshot
from pydamon.record.footprint import SYSTEM_PAGE_SIZE
from pydamon.record.model import Record, RecordError, TargetInfo
from pydamon.units import parse_duration, parse_number, parse_percent, parse_size


# damo's own reader accepts min and max in every number (``try_common_input``): so do we.
def parse_bytes(txt: Any) -> int | None:
    """Bytes from damo's forms (``123``, ``"1,024"``, ``"4 KiB"``); None for None."""
    return None if txt is None else parse_size(txt, allow_keywords=True)


def parse_ns(txt: Any) -> int | None:
    """Nanoseconds from damo's forms (``"1500"``, ``"1 s 200 ms"``); None for None."""
    return None if txt is None else parse_duration(txt, "ns", allow_keywords=True)


def parse_us(txt: Any) -> int | None:
    """Microseconds from damo's forms (``"250"``, ``"5 ms"``); None for None."""
    return None if txt is None else parse_duration(txt, "us", allow_keywords=True)


def _signed(txt: Any, parse: Callable[[Any], float]) -> float | None:
    """``parse(txt)``, and the negative numbers of damo's fake start-time snapshot (``-1``)."""
    if txt is None:
        return None
    if isinstance(txt, str) and txt.strip().startswith("-"):
        return -parse(txt.strip()[1:])
    if isinstance(txt, int | float) and not isinstance(txt, bool) and txt < 0:
        return txt
    return parse(txt)


def _count(txt: Any) -> float | None:
    return _signed(txt, lambda v: parse_number(v, allow_keywords=True))


def _percent(txt: Any) -> float | None:
    return _signed(txt, lambda v: parse_percent(v, allow_keywords=True))


# -- reading ---------------------------------------------------------------------------------------
def detect_damo_format(head: bytes) -> str | None:
    """'json_compressed', 'json', 'perf_script' or None, from a file's first bytes."""
    if head[:1] == b"\x78" and len(head) > 1 and (head[0] * 256 + head[1]) % 31 == 0:
        return "json_compressed"
    stripped = head.lstrip()
    if stripped[:1] == b"[":
        return "json"
    if b"damon:damon_aggregated" in head or b"damon:damos_before_apply" in head:
        return "perf_script"
    return None


def read_damo_record(path: str, fmt: str | None = None) -> Record:
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise RecordError(f"{path}: no such record file") from None
    fmt = fmt or detect_damo_format(data[:4096])
    if fmt == "json_compressed":
        try:
            data = zlib.decompress(data)
        except zlib.error as err:
            raise RecordError(f"{path}: damo json_compressed record is corrupted ({err})") from None
        fmt_name = "damo-json_compressed"
    elif fmt == "json":
        fmt_name = "damo-json"
    elif fmt == "perf_script":
        rec = _parse_perf_script(data.decode(errors="replace"), path)
        _attach_footprints(rec, path)
        return rec
    else:
        raise RecordError(f"{path}: unknown record format (neither pydamon nor damo)")
    try:
        kvpairs = json.loads(data)
    except ValueError as err:
        raise RecordError(f"{path}: damo record is not valid JSON ({err})") from None
    try:
        rec = records_from_damo_kvpairs(kvpairs, fmt_name)
    except DamoLayoutError as err:
        raise RecordError(f"{path}: not a damo record ({err})") from None
    except (KeyError, TypeError, ValueError, IndexError, AttributeError, OverflowError) as err:
        raise RecordError(
            f"{path}: not a damo record (unexpected JSON layout: {type(err).__name__} {err})"
        ) from None
    _attach_footprints(rec, path)
    return rec


class DamoLayoutError(ValueError):
    """A damo JSON record whose layout or values pydamon cannot take (the reason in one line)."""


#: Values are kept in int64 columns: addresses, times and counts must fit.
_INT64_MAX = 2**63 - 1


def _fits(value: Any, what: str, lo: int = -_INT64_MAX) -> Any:
    """``value`` if it is None or an integer in ``lo..2**63-1``, else a DamoLayoutError."""
    if value is None:
        return None
    if not lo <= value <= _INT64_MAX:
        raise DamoLayoutError(f"{what} {value} is out of range ({lo}..2**63-1)")
    return int(value)


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise DamoLayoutError(f"{what} is a {type(value).__name__}, not an object")
    return value


def _list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise DamoLayoutError(f"{what} is a {type(value).__name__}, not a list")
    return value


def records_from_damo_kvpairs(kvpairs: Any, source_format: str = "damo-json") -> Record:
    if not isinstance(kvpairs, list):
        raise DamoLayoutError("top level is not a list of records")
    snapshots: list[Snapshot] = []
    targets: list[TargetInfo] = []
    for index, rec in enumerate(kvpairs):
        where = f"record {index}"
        rec = _object(rec, where)
        intervals = _object(rec.get("intervals"), f"'intervals' of {where}")
        sample_us = _fits(parse_us(intervals.get("sample_us")), "sample_us", 0) or 0
        aggr_us = _fits(parse_us(intervals.get("aggr_us")), "aggr_us", 0) or 0
        target_id = rec.get("target_id")
        if target_id is not None and (
            not isinstance(target_id, int) or isinstance(target_id, bool)
        ):
            raise DamoLayoutError(f"'target_id' of {where} is not an integer")
        _fits(target_id, "target_id")
        targets.append(TargetInfo(index=index, target_id=target_id, name=f"target {target_id}"))
        for snap in _list(rec["snapshots"], f"'snapshots' of {where}"):
            snap = _object(snap, f"a snapshot of {where}")
            end_ns = _fits(parse_ns(snap["end_time"]), "end_time")
            start_ns = _fits(parse_ns(snap.get("start_time")), "start_time")
            if end_ns is None:
                raise DamoLayoutError("snapshot without end_time")
            s_sample = _fits(parse_us(snap.get("sample_interval_us")), "sample_us", 0) or sample_us
            if start_ns is None:
                start_ns = end_ns - aggr_us * 1000
            s_aggr = aggr_us or max((end_ns - start_ns) // 1000, 1)
            max_nr = max(s_aggr // s_sample, 1) if s_sample else 1
            regions = _list(snap["regions"], f"'regions' of a snapshot of {where}")
            n = len(regions)
            starts = np.empty(n, np.int64)
            ends = np.empty(n, np.int64)
            nr = np.empty(n, np.int64)
            age = np.empty(n, np.int64)
            for i, r in enumerate(regions):
                r = _object(r, "a region")
                starts[i] = _fits(parse_bytes(r["start"]), "region start", 0) or 0
                ends[i] = _fits(parse_bytes(r["end"]), "region end", 0) or 0
                nr[i] = _fits(_region_nr_accesses(r.get("nr_accesses"), max_nr), "nr_accesses")
                age[i] = _fits(_region_age(r.get("age"), s_aggr), "age")
            if n == 1 and starts[0] == 0 and ends[0] == 0 and nr[0] == -1:
                continue  # damo's fake snapshot for start time deduction
            snapshots.append(
                Snapshot(
                    target_index=index,
                    target_id=target_id,
                    start_us=start_ns // 1000,
                    end_us=end_ns // 1000,
                    sample_interval_us=s_sample,
                    aggr_interval_us=s_aggr,
                    starts=starts,
                    ends=ends,
                    nr_accesses=nr,
                    age=age,
                )
            )
    rec_out = Record.from_snapshots(
        snapshots,
        meta={"source": source_format, "ops": None},
        targets=targets,
        source_format=source_format,
    )
    return rec_out


def _region_nr_accesses(kv: Any, max_nr: int) -> int:
    if kv is None:
        return 0
    if not isinstance(kv, dict):
        return int(_count(kv) or 0)
    samples = _count(kv.get("samples"))
    if samples is not None:
        return int(samples)
    percent = _percent(kv.get("percent"))
    return int((percent or 0) * max_nr / 100)


def _region_age(kv: Any, aggr_us: int) -> int:
    if kv is None:
        return 0
    if not isinstance(kv, dict):
        return int(_count(kv) or 0)
    aggrs = _count(kv.get("aggr_intervals"))
    if aggrs is not None:
        return int(aggrs)
    usec = parse_us(kv.get("usec"))
    return int((usec or 0) // max(aggr_us, 1))


def _parse_perf_script(text: str, path: str) -> Record:
    """damo's ``perf_script`` form: one ``damon:damon_aggregated`` trace line per region."""
    per_target: dict[int, list[tuple[int, list[tuple[int, int, int, int]]]]] = {}
    pending: dict[int, tuple[int, int, list[tuple[int, int, int, int]]]] = {}
    for line in text.splitlines():
        fields = line.split()
        if len(fields) < 9 or fields[4] != "damon:damon_aggregated:":
            continue
        try:
            end_ns = int(float(fields[3].rstrip(":")) * 1e9)
            target_id = int(fields[5].split("=")[1])
            nr_regions = int(fields[6].split("=")[1])
            start, end = (int(x) for x in fields[7].rstrip(":").split("-"))
            nr = int(fields[8])
            age = int(fields[9]) if len(fields) > 9 else 0
        except (ValueError, IndexError):
            raise RecordError(f"{path}: malformed perf script line: {line.strip()[:80]}") from None
        cur = pending.get(target_id)
        if cur is None:
            cur = (end_ns, nr_regions, [])
            pending[target_id] = cur
        cur[2].append((start, end, nr, age))
        if len(cur[2]) == cur[1]:
            per_target.setdefault(target_id, []).append((cur[0], cur[2]))
            del pending[target_id]
    snapshots: list[Snapshot] = []
    targets = []
    for index, (target_id, snaps) in enumerate(per_target.items()):
        targets.append(TargetInfo(index=index, target_id=target_id, name=f"target {target_id}"))
        ends_ns = [e for e, _ in snaps]
        step = (ends_ns[-1] - ends_ns[0]) // max(len(ends_ns) - 1, 1) if len(ends_ns) > 1 else 0
        for j, (end_ns, regions) in enumerate(snaps):
            start_ns = ends_ns[j - 1] if j else end_ns - step
            arr = np.asarray(regions, np.int64).reshape(-1, 4)
            if len(arr) == 1 and arr[0, 0] == 0 and arr[0, 1] == 0 and arr[0, 2] == -1:
                continue
            aggr_us = max((end_ns - start_ns) // 1000, 1)
            snapshots.append(
                Snapshot(index, target_id, start_ns // 1000, end_ns // 1000, 0, aggr_us,
                         arr[:, 0].copy(), arr[:, 1].copy(), arr[:, 2].copy(), arr[:, 3].copy())
            )  # fmt: skip
    return Record.from_snapshots(
        snapshots,
        meta={"source": "damo-perf_script"},
        targets=targets,
        source_format="damo-perf_script",
    )


def _attach_footprints(rec: Record, path: str) -> None:
    """Fill footprint columns from damo's ``<record>.mem_footprint`` side file, if present."""
    side = path + ".mem_footprint"
    if not os.path.exists(side) or not rec.nr_snapshots:
        return
    try:
        with open(side) as f:
            entries = json.load(f)
        times = np.asarray([float(e["time"]) for e in entries])
    except (OSError, ValueError, KeyError, TypeError):
        rec.warnings.append(f"{side}: unreadable, footprints ignored")
        return
    if not len(times):
        return
    # damo stamps footprints with wall time; snapshots carry the monitor's clock. Align the
    # two by their first samples and pick, for each snapshot, the footprint closest in time.
    snap_t = (rec.snap_end_us - rec.snap_end_us.min()) / 1e6
    fp_t = times - times.min()
    idx = np.clip(np.searchsorted(fp_t, snap_t), 0, len(times) - 1)
    for i, j in enumerate(idx.tolist()):
        proc = None
        sysfp = None
        for fp in entries[j]["footprints"]:
            if fp.get("pid") is None:
                sysfp = fp["footprint"]
            elif proc is None:
                proc = fp["footprint"]
        if proc:
            rec.rss_bytes[i] = int(proc.get("resident") or 0) * SYSTEM_PAGE_SIZE
            rec.vsz_bytes[i] = int(proc.get("size") or 0) * SYSTEM_PAGE_SIZE
        if sysfp:
            if sysfp.get("free") is not None:
                rec.sys_free_bytes[i] = int(sysfp["free"]) * 1024
            if sysfp.get("total") is not None:
                rec.sys_total_bytes[i] = int(sysfp["total"]) * 1024


# -- writing: pydamon.record.damo_write (streamed snapshot by snapshot) ------------------------
from pydamon.record.damo_write import (  # noqa: E402  (re-exported: the module's old API)
    record_to_damo_kvpairs,
    write_damo_record,
)

__all__ = ["read_damo_record", "record_to_damo_kvpairs", "write_damo_record"]
