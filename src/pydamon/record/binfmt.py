"""pydamon's own record files: header, chunks, reader, writer, finalize; see
``docs/record-format.md``.

A file is a header (magic, version, metadata JSON) followed by chunks, each
``tag(4) | payload_len(u32) | crc32(u32) | payload``. Snapshot data lives in ``BLK1`` chunks
holding one or more snapshots (the block codec: :mod:`pydamon.record.blocks`). While
recording, every snapshot is appended as its own block, so a crash or ``kill -9`` leaves a file
that reads up to the last complete snapshot (readers stop at a torn tail). At close the file is
rewritten into large blocks plus an ``END1`` footer and atomically renamed into place.
"""

from __future__ import annotations

import json
import mmap
import os
import struct
import zlib
from collections.abc import Iterator
from dataclasses import asdict
from typing import Any, BinaryIO

from pydamon.record.blocks import (
    counts_fit_int32,
    decode_block,
    decode_into,
    empty_record,
    encode_block,
    parse_block,
)
from pydamon.record.model import Damage, Record, RecordError, TargetInfo

MAGIC = b"PYDAMREC"
#: Newest version this reader reads. Version 1 files hold only ``BLK1`` blocks (streamed files,
#: compressed finalized files); version 2 adds the columnar ``COL2`` layout of finalized files.
VERSION = 2
VERSION_BLOCKS = 1
VERSION_COLUMNS = 2
_HEADER = struct.Struct("<8sHHII")  # magic, version, flags, meta_len, meta_crc
CHUNK = struct.Struct("<4sII")  # tag, payload_len, crc32

TAG_BLOCK = b"BLK1"
TAG_COLUMN = b"COL2"
TAG_EVENT = b"JSN1"
TAG_END = b"END1"
KNOWN_TAGS = (TAG_BLOCK, TAG_COLUMN, TAG_EVENT, TAG_END)

#: Snapshots per block when a file is finalized: big enough that per-chunk overhead vanishes,
#: small enough that a block decodes in a few milliseconds.
FINAL_BLOCK_SNAPSHOTS = 2048


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool) and v == v and abs(v) < 1e300


#: Header metadata fields readers use, with what each must be (other fields are kept as they are).
_META_FIELDS: dict[str, tuple[str, Any]] = {
    "ops": ("a string", lambda v: v is None or isinstance(v, str)),
    "attrs": ("an object of integers", lambda v: v is None or (
        isinstance(v, dict) and all(_is_int(x) for x in v.values()))),
    "targets": ("a list of objects", lambda v: isinstance(v, list) and all(
        isinstance(t, dict) for t in v)),
    "start_time_unix": ("a number", _is_number),
    "start_clock_us": ("an integer", _is_int),
}  # fmt: skip
_TARGET_FIELDS: dict[str, tuple[str, Any]] = {
    "index": ("an integer", lambda v: _is_int(v) and 0 <= v < 2**31),
    "target_id": ("an integer", lambda v: v is None or (_is_int(v) and abs(v) < 2**63)),
    "pid": ("an integer", lambda v: v is None or (_is_int(v) and 0 <= v < 2**31)),
    "name": ("a string", lambda v: isinstance(v, str)),
}


def check_meta(meta: Any) -> dict[str, Any]:
    """``meta`` if the fields readers use have the right types, else a one-line RecordError."""
    if not isinstance(meta, dict):
        raise RecordError("record header metadata is not a JSON object")
    for key, (want, ok) in _META_FIELDS.items():
        if key in meta and not ok(meta[key]):
            raise RecordError(f"record header field {key!r} is not {want}")
    for t in meta.get("targets") or []:
        for key, (want, ok) in _TARGET_FIELDS.items():
            if key in t and not ok(t[key]):
                raise RecordError(f"record header field 'targets[].{key}' is not {want}")
    return meta


def targets_from_meta(meta: dict[str, Any]) -> list[TargetInfo]:
    out = []
    for i, t in enumerate(meta.get("targets") or []):
        out.append(
            TargetInfo(
                index=int(t.get("index", i)),
                target_id=t.get("target_id", t.get("pid")),
                pid=t.get("pid"),
                name=str(t.get("name", "")),
            )
        )
    return out


def header_bytes(meta: dict[str, Any], version: int = VERSION_BLOCKS) -> bytes:
    meta = dict(meta)
    meta["format_version"] = version
    meta_bytes = json.dumps(meta, sort_keys=True).encode()
    return _HEADER.pack(MAGIC, version, 0, len(meta_bytes), zlib.crc32(meta_bytes)) + meta_bytes


def chunk_bytes(tag: bytes, payload: bytes) -> bytes:
    return CHUNK.pack(tag, len(payload), zlib.crc32(payload)) + payload


def is_pydamon_record(head: bytes) -> bool:
    return head[: len(MAGIC)] == MAGIC


class RecordReader:
    """Reads a pydamon record file; tolerates a torn tail (a file being written or cut short)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        try:
            with open(self.path, "rb") as f:
                size = os.fstat(f.fileno()).st_size
                # mapped, not read: block columns are used in place (zero copy)
                buf: Any = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
                self._buf = buf
                self._data = memoryview(buf)
        except FileNotFoundError:
            raise RecordError(f"{self.path}: no such record file") from None
        except IsADirectoryError:
            raise RecordError(f"{self.path}: is a directory, not a record file") from None
        data = self._data
        if len(data) < _HEADER.size or not is_pydamon_record(bytes(data[:8])):
            raise RecordError(f"{self.path}: not a pydamon record (bad magic)")
        magic, version, _flags, meta_len, meta_crc = _HEADER.unpack_from(data, 0)
        if version > VERSION:
            raise RecordError(
                f"{self.path}: record format version {version} is newer than this pydamon "
                f"reads ({VERSION}); upgrade pydamon"
            )
        meta_raw = bytes(data[_HEADER.size : _HEADER.size + meta_len])
        if len(meta_raw) != meta_len or zlib.crc32(meta_raw) != meta_crc:
            raise RecordError(f"{self.path}: record header is truncated or corrupted")
        try:
            self.meta: dict[str, Any] = check_meta(json.loads(meta_raw))
        except RecordError as err:
            raise RecordError(f"{self.path}: {err}") from None
        except ValueError:
            raise RecordError(f"{self.path}: record header is not valid JSON") from None
        self.targets = targets_from_meta(self.meta)
        self.version = int(version)
        self._first_chunk = _HEADER.size + meta_len
        self.complete = False
        self.footer: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.damaged = []

    #: Byte ranges skipped as damaged: (first byte, end byte, chunks read before).
    damaged: list[tuple[int, int, int]]

    def _chunks(self) -> Iterator[tuple[bytes, memoryview]]:
        """(tag, payload) of every complete, checksummed chunk, in file order."""
        for tag, _pos, body in self._chunks_at():
            yield tag, body

    def _chunk_at(self, pos: int) -> tuple[bytes, int, memoryview] | str:
        """(tag, length, payload) of the checksummed chunk at ``pos``, or why there is none."""
        from pydamon.record.columnar import descriptor_length

        data, end = self._data, len(self._data)
        if end - pos < CHUNK.size:
            return "partial chunk header"
        tag, length, crc = CHUNK.unpack_from(data, pos)
        body = data[pos + CHUNK.size : pos + CHUNK.size + length]
        if len(body) != length:
            return "partial chunk"
        covered = body[: descriptor_length(body)] if tag == TAG_COLUMN else body
        if zlib.crc32(covered) != crc:
            return "bad checksum"
        return tag, length, body

    def _resync(self, pos: int) -> int | None:
        """Offset of the next checksummed chunk of a known kind after ``pos``, if any."""
        buf = self._buf
        nxt = {t: buf.find(t, pos + 1) for t in KNOWN_TAGS}
        while True:
            live = [p for p in nxt.values() if p >= 0]
            if not live:
                return None
            cand = min(live)
            if not isinstance(self._chunk_at(cand), str):
                return cand
            for t, p in nxt.items():
                if p == cand:
                    nxt[t] = buf.find(t, cand + 1)

    def _chunks_at(self) -> Iterator[tuple[bytes, int, memoryview]]:
        """(tag, payload offset, payload) of every complete, checksummed chunk. A ``COL2``
        chunk's CRC covers its descriptor; its data has per-segment CRCs, checked when first
        used. A bad chunk is skipped: the walk resumes at the next good chunk and notes the
        damaged byte range in :attr:`damaged`; a bad chunk with nothing good after it is a torn
        tail (a file cut short or still being written)."""
        pos, end = self._first_chunk, len(self._data)
        nr_chunks = 0
        # a new walk: what the last one noted is noted again
        self.events, self.warnings, self.complete, self.footer = [], [], False, {}
        self.damaged = []
        while pos < end:
            got = self._chunk_at(pos)
            if isinstance(got, str):
                nxt = self._resync(pos)
                if nxt is None:
                    self.warnings.append(f"torn tail after {nr_chunks} chunks ({got})")
                    return
                self.damaged.append((pos, nxt, nr_chunks))
                pos = nxt
                continue
            tag, length, body = got
            if tag in (TAG_EVENT, TAG_END):
                try:
                    obj = json.loads(bytes(body))
                except ValueError:
                    obj = None
                if not isinstance(obj, dict):
                    self.damaged.append((pos, pos + CHUNK.size + length, nr_chunks))
                    pos += CHUNK.size + length
                    continue
                if tag == TAG_EVENT:
                    self.events.append(obj)
                else:
                    self.complete = True
                    self.footer = obj
            yield tag, pos + CHUNK.size, body
            nr_chunks += 1
            pos += CHUNK.size + length

    def blocks(self) -> Iterator[Record]:
        """Decode the snapshot blocks in file order (unknown chunk tags and damaged blocks are
        skipped); a columnar (version 2) record comes in slices of
        :data:`FINAL_BLOCK_SNAPSHOTS` snapshots."""
        if self.version >= VERSION_COLUMNS:
            rec = self.read()
            for lo in range(0, rec.nr_snapshots, FINAL_BLOCK_SNAPSHOTS):
                yield rec.slice(lo, lo + FINAL_BLOCK_SNAPSHOTS)
            return
        for tag, body in self._chunks():
            if tag == TAG_BLOCK:
                try:
                    yield decode_block(body, self.meta, self.targets)
                except RecordError as err:
                    self.warnings.append(f"a damaged snapshot block skipped ({err})")

    def read(self, *, verify: bool = False) -> Record:
        """The whole record: blocks are decoded straight into preallocated columns; the columns
        of a version 2 record are mapped, not read (decoded per snapshot range when used, their
        checksums checked then; ``verify``: check every column now and leave out the snapshots
        of damaged ones). Damaged chunks are skipped and listed in ``Record.damage``."""
        try:
            chunks = list(self._chunks_at())
            blocks = [(pos, body) for tag, pos, body in chunks if tag == TAG_BLOCK]
            columns = [(pos, body) for tag, pos, body in chunks if tag == TAG_COLUMN]
            if columns:
                from pydamon.record.columnar import read_columns

                if blocks:
                    raise RecordError("record mixes snapshot blocks and columns")
                rec = read_columns(
                    self.path, columns, self.meta, self.targets, verify=verify,
                    damaged=self.damaged,
                )  # fmt: skip
                chunk_damage = [Damage(a, b, "bad checksum", 0) for a, b, _ in self.damaged]
                rec.damage[:0] = chunk_damage
            else:
                rec = self._read_blocks(chunks)
        except RecordError as err:
            msg = str(err)
            raise RecordError(msg if msg.startswith(self.path) else f"{self.path}: {msg}") from None
        rec.complete = self.complete
        rec.warnings = list(self.warnings) + [d.describe() for d in rec.damage]
        rec.source_format = "pydamon"
        return rec

    def _read_blocks(self, chunks: list[tuple[bytes, int, memoryview]]) -> Record:
        parsed = []
        damage: list[tuple[int, int, str, int]] = []  # first byte, end byte, what, chunk index
        for j, (tag, pos, body) in enumerate(chunks):
            if tag != TAG_BLOCK:
                continue
            try:
                parsed.append((j, parse_block(body)))
            except RecordError as err:
                damage.append((pos - CHUNK.size, pos + len(body), str(err), j))
        damage += [(a, b, "bad checksum", j) for a, b, j in self.damaged]
        small = all(counts_fit_int32(cols) for _, (_n, _m, cols) in parsed)
        n = sum(p[1][0] for p in parsed)
        m = sum(p[1][1] for p in parsed)
        rec = empty_record(n, m, self.meta, self.targets, small)
        n0 = m0 = 0
        before: list[int] = []  # snapshots read before chunk j
        for j, block in parsed:
            before += [n0] * (j + 1 - len(before))
            n0, m0 = decode_into(block, rec, n0, m0)
        before += [n0] * (len(chunks) + 1 - len(before))
        rec.damage = _describe_damage(rec, damage, before, self.footer)
        return rec


def _describe_damage(
    rec: Record,
    damage: list[tuple[int, int, str, int]],
    before: list[int],
    footer: dict[str, Any],
) -> list[Damage]:
    """Damage entries of a block record: where, the snapshots and time lost if known."""
    out = []
    expected = footer.get("nr_snapshots")
    lost_total = expected - rec.nr_snapshots if isinstance(expected, int) else None
    origin = int(rec.snap_start_us.min()) if rec.nr_snapshots else 0
    for first, end, what, j in sorted(damage):
        i = before[min(j, len(before) - 1)]
        lost = lost_total if len(damage) == 1 and lost_total is not None else None
        gap_from = int(rec.snap_end_us[i - 1]) - origin if i > 0 else None
        gap_to = int(rec.snap_start_us[i]) - origin if i < rec.nr_snapshots else None
        out.append(Damage(first, end, what, i, lost, gap_from, gap_to))
    return out


class RecordWriter:
    """Streams snapshots into a record file as they are made; :meth:`close` finalizes it.

    Every :meth:`add` appends one checksummed block and hands it to the OS (``flush``), so the
    file survives the recorder being killed. ``fsync_every`` > 0 additionally fsyncs after that
    many snapshots (for power loss).

    The writer owns the file while it writes (:class:`pydamon.record.ownership.OutputLock` on
    ``<path>.lock``, naming ``holder``): a second writer of the same file is refused with a
    :class:`~pydamon.record.ownership.RecordBusy`. ``lock=False`` when the caller holds it.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        meta: dict[str, Any],
        *,
        compress: int = 0,
        fsync_every: int = 0,
        mode: int = 0o644,
        lock: bool = True,
        holder: str = "pydamon",
    ) -> None:
        from pydamon.record.ownership import OutputLock

        self.path = os.fspath(path)
        self._lock = OutputLock(self.path, holder) if lock else None
        self.meta = dict(meta)
        self.meta.setdefault("format", "pydamon-record")
        self.compress = compress
        self.fsync_every = fsync_every
        self.nr_snapshots = 0
        self.nr_regions_total = 0
        try:
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        except BaseException:
            self._release()
            raise
        self._file: BinaryIO | None = os.fdopen(fd, "wb")
        self._file.write(header_bytes(self.meta))
        self._file.flush()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()

    def add(self, part: Record) -> None:
        """Append the snapshots of ``part`` (usually one) as one block."""
        if self._file is None:
            raise ValueError("record writer is closed")
        self._file.write(chunk_bytes(TAG_BLOCK, encode_block(part)))
        self._file.flush()
        self.nr_snapshots += part.nr_snapshots
        self.nr_regions_total += part.nr_regions_total
        if self.fsync_every and self.nr_snapshots % self.fsync_every == 0:
            os.fsync(self._file.fileno())

    def add_event(self, event: dict[str, Any]) -> None:
        """Append a JSON event (e.g. attrs changed, scheme stats)."""
        if self._file is None:
            raise ValueError("record writer is closed")
        self._file.write(chunk_bytes(TAG_EVENT, json.dumps(event).encode()))
        self._file.flush()

    def close(self, summary: dict[str, Any] | None = None, *, consolidate: bool = True) -> None:
        """Finalize: rewrite into big blocks with a footer, then atomically rename into place."""
        if self._file is None:
            return
        self._file.close()
        self._file = None
        try:
            if consolidate:
                finalize_file(self.path, summary or {}, compress=self.compress)
            else:
                with open(self.path, "ab") as f:
                    f.write(chunk_bytes(TAG_END, json.dumps(summary or {}).encode()))
        finally:
            self._release()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def finalize_file(path: str, summary: dict[str, Any], *, compress: int = 0) -> None:
    """Rewrite a (streamed) record via temp + rename: uncompressed records as whole-record
    columns (version 2, mapped when read), compressed ones as big blocks (version 1); plus the
    events and the footer."""
    reader = RecordReader(path)
    tmp = f"{path}.tmp.{os.getpid()}"
    try:
        mode = os.stat(path).st_mode & 0o777
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            for _ in reader._chunks_at():  # the events, without decoding anything
                pass
            events = [chunk_bytes(TAG_EVENT, json.dumps(e).encode()) for e in reader.events]

            def trailer(n: int) -> list[bytes]:
                footer = {**summary, "nr_snapshots": n}
                return [*events, chunk_bytes(TAG_END, json.dumps(footer).encode())]

            nr_snapshots = None
            if not compress:
                from pydamon.record.columnar import write_columns

                nr_snapshots = write_columns(out.fileno(), reader.meta, reader.blocks, trailer)
            if nr_snapshots is None:
                _write_blocks(out, reader.meta, reader.blocks(), compress, events, summary)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _write_blocks(
    out: BinaryIO,
    meta: dict[str, Any],
    parts: Iterator[Record],
    compress: int,
    events: list[bytes],
    summary: dict[str, Any],
) -> None:
    """Version 1 layout: blocks of up to :data:`FINAL_BLOCK_SNAPSHOTS` snapshots."""
    out.seek(0)
    out.truncate()
    out.write(header_bytes(meta, VERSION_BLOCKS))
    nr_snapshots = 0
    pending: list[Record] = []
    pending_n = 0
    for part in parts:
        pending.append(part)
        pending_n += part.nr_snapshots
        if pending_n >= FINAL_BLOCK_SNAPSHOTS:
            out.write(chunk_bytes(TAG_BLOCK, encode_block(Record.concatenate(pending), compress)))
            nr_snapshots += pending_n
            pending, pending_n = [], 0
    if pending:
        out.write(chunk_bytes(TAG_BLOCK, encode_block(Record.concatenate(pending), compress)))
        nr_snapshots += pending_n
    for event in events:
        out.write(event)
    footer = dict(summary)
    footer["nr_snapshots"] = nr_snapshots
    out.write(chunk_bytes(TAG_END, json.dumps(footer).encode()))


def write_record(
    path: str | os.PathLike[str],
    record: Record,
    *,
    compress: int = 0,
    mode: int = 0o644,
    layout: str = "columns",
) -> None:
    """Write a whole :class:`Record` as a finalized pydamon record (temp + rename): version 2
    columns if uncompressed, version 1 blocks if ``compress`` > 0 or ``layout="blocks"`` (what
    pydamon wrote before version 2, for older readers)."""
    if layout not in ("columns", "blocks"):
        raise ValueError(f"unknown record layout {layout!r}; use columns or blocks")
    path = os.fspath(path)
    meta = dict(record.meta)
    meta.setdefault("format", "pydamon-record")
    meta["targets"] = [asdict(t) for t in record.targets]
    tmp = f"{path}.tmp.{os.getpid()}"
    n = record.nr_snapshots

    def parts() -> Iterator[Record]:
        for lo in range(0, n, FINAL_BLOCK_SNAPSHOTS):
            yield record.slice(lo, lo + FINAL_BLOCK_SNAPSHOTS)

    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "wb") as out:
            written = None
            if not compress and layout == "columns":
                from pydamon.record.columnar import write_columns

                def trailer(nr: int) -> list[bytes]:
                    return [chunk_bytes(TAG_END, json.dumps({"nr_snapshots": nr}).encode())]

                written = write_columns(out.fileno(), meta, parts, trailer)
            if written is None:
                _write_blocks(out, meta, parts(), compress, [], {})
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
