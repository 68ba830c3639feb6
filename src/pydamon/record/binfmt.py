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
    block_shape,
    counts_fit_int32,
    decode_block,
    decode_into,
    empty_record,
    encode_block,
)
from pydamon.record.model import Record, RecordError, TargetInfo

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

#: Snapshots per block when a file is finalized: big enough that per-chunk overhead vanishes,
#: small enough that a block decodes in a few milliseconds.
FINAL_BLOCK_SNAPSHOTS = 2048


def targets_from_meta(meta: dict[str, Any]) -> list[TargetInfo]:
    out = []
    for i, t in enumerate(meta.get("targets", [])):
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
            self.meta: dict[str, Any] = json.loads(meta_raw)
        except ValueError:
            raise RecordError(f"{self.path}: record header is not valid JSON") from None
        self.targets = targets_from_meta(self.meta)
        self.version = int(version)
        self._first_chunk = _HEADER.size + meta_len
        self.complete = False
        self.footer: dict[str, Any] = {}
        self.events: list[dict[str, Any]] = []
        self.warnings: list[str] = []

    def _chunks(self) -> Iterator[tuple[bytes, memoryview]]:
        """(tag, payload) of every complete, checksummed chunk, in file order."""
        for tag, _pos, body in self._chunks_at():
            yield tag, body

    def _chunks_at(self) -> Iterator[tuple[bytes, int, memoryview]]:
        """(tag, payload offset, payload) of every complete chunk. A ``COL2`` chunk's CRC covers
        its descriptor; its data has per-segment CRCs, checked when first used."""
        from pydamon.record.columnar import descriptor_length

        data, pos, end = self._data, self._first_chunk, len(self._data)
        nr_chunks = 0
        # a new walk: what the last one noted is noted again
        self.events, self.warnings, self.complete, self.footer = [], [], False, {}
        while pos < end:
            if end - pos < CHUNK.size:
                self.warnings.append(f"torn tail after {nr_chunks} chunks (partial chunk header)")
                return
            tag, length, crc = CHUNK.unpack_from(data, pos)
            body = data[pos + CHUNK.size : pos + CHUNK.size + length]
            if len(body) != length:
                self.warnings.append(f"torn tail after {nr_chunks} chunks (partial chunk)")
                return
            next_pos = pos + CHUNK.size + length
            covered = body[: descriptor_length(body)] if tag == TAG_COLUMN else body
            if zlib.crc32(covered) != crc:
                if next_pos >= end:
                    self.warnings.append(f"torn tail after {nr_chunks} chunks (bad checksum)")
                    return
                raise RecordError(
                    f"{self.path}: corrupted chunk at byte {pos} (checksum mismatch); "
                    f"'pydamon report raw' shows what is readable before it"
                )
            if tag == TAG_EVENT:
                self.events.append(json.loads(bytes(body)))
            elif tag == TAG_END:
                self.complete = True
                self.footer = json.loads(bytes(body))
            yield tag, pos + CHUNK.size, body
            nr_chunks += 1
            pos = next_pos

    def blocks(self) -> Iterator[Record]:
        """Decode the snapshot blocks in file order (unknown chunk tags are skipped); a columnar
        (version 2) record comes in slices of :data:`FINAL_BLOCK_SNAPSHOTS` snapshots."""
        if self.version >= VERSION_COLUMNS:
            rec = self.read()
            for lo in range(0, rec.nr_snapshots, FINAL_BLOCK_SNAPSHOTS):
                yield rec.slice(lo, lo + FINAL_BLOCK_SNAPSHOTS)
            return
        for tag, body in self._chunks():
            if tag == TAG_BLOCK:
                yield decode_block(body, self.meta, self.targets)

    def read(self) -> Record:
        """The whole record: blocks are decoded straight into preallocated columns; the columns
        of a version 2 record are mapped, not read (decoded per snapshot range when used)."""
        try:
            chunks = list(self._chunks_at())
            bodies = [body for tag, _pos, body in chunks if tag == TAG_BLOCK]
            columns = [(pos, body) for tag, pos, body in chunks if tag == TAG_COLUMN]
            if columns:
                from pydamon.record.columnar import read_columns

                if bodies:
                    raise RecordError("record mixes snapshot blocks and columns")
                rec = read_columns(self.path, columns, self.meta, self.targets)
            else:
                rec = self._read_blocks(bodies)
        except RecordError as err:
            msg = str(err)
            raise RecordError(msg if msg.startswith(self.path) else f"{self.path}: {msg}") from None
        rec.complete = self.complete
        rec.warnings = list(self.warnings)
        rec.source_format = "pydamon"
        return rec

    def _read_blocks(self, bodies: list[memoryview]) -> Record:
        shapes = [block_shape(b) for b in bodies]
        small = all(counts_fit_int32(b) for b in bodies)
        rec = empty_record(
            sum(n for n, _ in shapes),
            sum(m for _, m in shapes),
            self.meta,
            self.targets,
            small,
        )
        n0 = m0 = 0
        for body in bodies:
            n0, m0 = decode_into(body, rec, n0, m0)
        return rec


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
