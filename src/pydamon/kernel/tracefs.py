"""Monitoring results from the ``damon:damon_aggregated`` tracepoint through tracefs, without
perf or trace-cmd.

pydamon makes a trace instance of its own (``instances/pydamon-<pid>``), so the global trace
buffer and anyone else's tracing are left alone, enables the tracepoint there, and reads its
``trace_pipe``. The kdamond traces every region of every target at the end of each aggregation
(``kdamond_reset_aggregated()``), target by target in address order, each line naming the target's
index and its number of regions: :class:`AggregationAssembler` groups the lines back into one list
of regions per target per aggregation, keeping only the lines of the kdamond it is told about.
"""

from __future__ import annotations

import errno
import os
import re
import select
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pydamon.core.errors import FeatureMissing, RealMemoryError
from pydamon.kernel.sysfs_common import os_error_text

#: Where tracefs is mounted, the newest place first.
TRACEFS_MOUNTS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")
EVENT_DIR = "events/damon/damon_aggregated"

# "<comm>-<pid> [<cpu>] <flags> <seconds>: damon_aggregated: target_id=<t> nr_regions=<n>
# <start>-<end>: <nr_accesses> <age>"; the comm may hold spaces and dashes, the flags field
# depends on trace options, so only the pid before the cpu and what follows the timestamp count.
_LINE = re.compile(
    r"-(?P<pid>\d+)\s+(?:\(\s*[-\d]+\)\s+)?\[\d+\][^:]*?\s(?P<ts>\d+\.\d+):\s+damon_aggregated:\s+"
    r"target_id=(?P<target>\d+)\s+nr_regions=(?P<nr>\d+)\s+(?P<start>\d+)-(?P<end>\d+):\s+"
    r"(?P<nr_accesses>\d+)\s+(?P<age>\d+)"
)


class TracefsUnavailable(FeatureMissing):
    """No usable tracefs, or no ``damon_aggregated`` tracepoint in it (one-line message)."""


@dataclass(frozen=True)
class AggregatedLine:
    """One ``damon_aggregated`` event: a region of a target at the end of an aggregation."""

    pid: int
    timestamp_us: int
    target_index: int
    nr_regions: int
    start: int
    end: int
    nr_accesses: int
    age: int


def parse_line(line: str) -> AggregatedLine | None:
    """The event of a trace line, or None for any other line."""
    m = _LINE.search(line)
    if m is None:
        return None
    seconds, _, fraction = m["ts"].partition(".")
    micros = int((fraction + "000000")[:6])
    return AggregatedLine(
        pid=int(m["pid"]),
        timestamp_us=int(seconds) * 1_000_000 + micros,
        target_index=int(m["target"]),
        nr_regions=int(m["nr"]),
        start=int(m["start"]),
        end=int(m["end"]),
        nr_accesses=int(m["nr_accesses"]),
        age=int(m["age"]),
    )


@dataclass
class TracedAggregation:
    """The regions of every target at the end of one aggregation, as the kdamond traced them."""

    timestamp_us: int
    #: Per target index: (start, end, nr_accesses, age) of each region, in address order.
    regions: list[list[tuple[int, int, int, int]]]


class AggregationAssembler:
    """Groups ``damon_aggregated`` lines of kdamond ``pid`` into whole aggregations.

    An aggregation is target 0's ``nr_regions`` lines, then target 1's, and so on (a target
    without regions sends none). Lines that break that order, or a ``[LOST n EVENTS]`` line of
    ``trace_pipe`` (the buffer overflowed), lose their aggregation, counted in :attr:`dropped`,
    never a wrong snapshot; assembling then starts again at the next aggregation's target 0.
    """

    def __init__(self, nr_targets: int, pid: int | None = None) -> None:
        self.nr_targets = nr_targets
        self.pid = pid
        self.dropped = 0
        self._regions: list[list[tuple[int, int, int, int]]] = []
        self._target = -1  # the target whose lines come now; -1 before an aggregation
        self._expected = 0
        self._timestamp_us = 0
        self._resync = False  # after a loss: wait for a target 0 line

    def feed(self, lines: Iterable[str]) -> list[TracedAggregation]:
        """Take trace lines; return the aggregations they completed, oldest first."""
        done: list[TracedAggregation] = []
        for text in lines:
            if "[LOST " in text:
                self._lose()
                continue
            event = parse_line(text)
            if event is None or (self.pid is not None and event.pid != self.pid):
                continue
            if 0 <= event.target_index < self.nr_targets:
                self._add(event, done)
        return done

    def _complete(self) -> bool:
        return self._target >= 0 and len(self._regions[self._target]) == self._expected

    def _add(self, e: AggregatedLine, done: list[TracedAggregation]) -> None:
        t = e.target_index
        if t == self._target and not self._complete():
            last = self._regions[t][-1]
            if e.nr_regions == self._expected and e.start >= last[1]:
                self._append(e, done)
                return
        elif t > self._target and (self._target < 0 or self._complete()):
            if self._target < 0 and t != 0 and self._resync:
                return  # events were lost: this aggregation's first targets may be among them
            self._begin(e)
            self._append(e, done)
            return
        elif t <= self._target and self._complete():
            # the last targets had no regions: the previous aggregation was whole
            done.append(self._emit())
            self._begin(e)
            self._append(e, done)
            return
        self._lose()
        if t == 0:
            self._begin(e)
            self._append(e, done)

    def _lose(self) -> None:
        if self._target >= 0:
            self.dropped += 1
        self._target = -1
        self._resync = True

    def _begin(self, e: AggregatedLine) -> None:
        if self._target < 0:
            self._regions = [[] for _ in range(self.nr_targets)]
            self._timestamp_us = e.timestamp_us
            self._resync = False
        self._target = e.target_index
        self._expected = e.nr_regions

    def _append(self, e: AggregatedLine, done: list[TracedAggregation]) -> None:
        self._regions[e.target_index].append((e.start, e.end, e.nr_accesses, e.age))
        if e.target_index == self.nr_targets - 1 and self._complete():
            done.append(self._emit())

    def _emit(self) -> TracedAggregation:
        whole = TracedAggregation(timestamp_us=self._timestamp_us, regions=self._regions)
        self._regions = []
        self._target = -1
        return whole


class TracefsIO:
    """File access to tracefs (host tests pass one that emulates it under a temporary tree)."""

    def isdir(self, path: str) -> bool:
        return os.path.isdir(path)

    def exists(self, path: str) -> bool:
        return os.path.exists(path)

    def mkdir(self, path: str) -> None:
        os.mkdir(path)

    def rmdir(self, path: str) -> None:
        os.rmdir(path)

    def write(self, path: str, value: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, value.encode())
        finally:
            os.close(fd)

    def open_pipe(self, path: str) -> int:
        return os.open(path, os.O_RDONLY | os.O_NONBLOCK)


def find_tracefs(candidates: Sequence[str] = TRACEFS_MOUNTS, io: TracefsIO | None = None) -> str:
    """The tracefs mount point with DAMON's tracepoints; :class:`TracefsUnavailable` if none."""
    io = io or TracefsIO()
    for root in candidates:
        if io.isdir(os.path.join(root, "instances")):
            if not io.isdir(os.path.join(root, EVENT_DIR)):
                raise TracefsUnavailable(
                    f"{root} has no {EVENT_DIR} tracepoint (kernel without DAMON tracing)"
                )
            return root
    raise TracefsUnavailable(f"no tracefs mounted at {' or '.join(candidates)}")


class TraceInstance:
    """A trace instance of this process (``instances/pydamon-<pid>``) recording
    ``damon_aggregated`` events, read through its ``trace_pipe``."""

    def __init__(self, root: str, io: TracefsIO | None = None, name: str | None = None) -> None:
        self.io = io or TracefsIO()
        self.root = root
        self.name = name or f"pydamon-{os.getpid()}"
        self.path = os.path.join(root, "instances", self.name)
        self._fd: int | None = None
        self._partial = b""
        #: Whether the events' timestamps are CLOCK_MONOTONIC (``trace_clock`` took ``mono``).
        self.monotonic = False

    def open(self, kdamond_pid: int | None = None) -> None:
        """Make the instance, enable the tracepoint in it and open its pipe."""
        try:
            self.io.mkdir(self.path)
        except FileExistsError:
            pass  # left by an earlier run of this very pid: it is ours
        except OSError as err:
            raise _error("make the trace instance", self.path, err) from None
        try:
            # CLOCK_MONOTONIC, so that the events' times are time.monotonic()'s
            self.monotonic = self._try_write("trace_clock", "mono")
            if kdamond_pid is not None:
                self.set_pid(kdamond_pid)
            self._write(f"{EVENT_DIR}/enable", "1")
            self._fd = self.io.open_pipe(os.path.join(self.path, "trace_pipe"))
        except BaseException:
            self.close()
            raise

    def set_pid(self, pid: int) -> None:
        """Let the kernel drop other kdamonds' events (the reader filters them too)."""
        self._try_write(f"{EVENT_DIR}/filter", f"common_pid == {pid}")

    def _write(self, rel: str, value: str) -> None:
        path = os.path.join(self.path, rel)
        try:
            self.io.write(path, value)
        except OSError as err:
            raise _error(f"write {value!r} to", path, err) from None

    def _try_write(self, rel: str, value: str) -> bool:
        try:
            self.io.write(os.path.join(self.path, rel), value)
        except OSError:
            return False  # optional: the reader does without
        return True

    def read_lines(self, timeout_s: float) -> list[str]:
        """The whole lines that arrived within ``timeout_s`` (none if nothing did)."""
        if self._fd is None:
            raise RealMemoryError(f"the trace instance {self.path} is not open")
        ready, _, _ = select.select([self._fd], [], [], timeout_s)
        if not ready:
            return []
        chunks = []
        while True:
            try:
                chunk = os.read(self._fd, 1 << 16)
            except BlockingIOError:
                break
            except OSError as err:
                if err.errno == errno.EINTR:
                    continue
                raise _error("read", os.path.join(self.path, "trace_pipe"), err) from None
            if not chunk:
                break
            chunks.append(chunk)
        if not chunks:
            return []
        data = self._partial + b"".join(chunks)
        lines = data.split(b"\n")
        self._partial = lines.pop()
        return [line.decode(errors="replace") for line in lines if line]

    def close(self) -> None:
        """Disable the tracepoint and remove the instance (tracefs drops its buffer)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        if not self.io.isdir(self.path):
            return
        self._try_write(f"{EVENT_DIR}/enable", "0")
        try:
            self.io.rmdir(self.path)
        except OSError:
            pass  # busy or gone: the instance holds no state anyone else reads


def _error(verb: str, path: str, err: OSError) -> RealMemoryError:
    if err.errno in (errno.EACCES, errno.EPERM):
        return FeatureMissing(f"cannot {verb} {path}: {os_error_text(err)}; run as root")
    return RealMemoryError(f"cannot {verb} {path}: {os_error_text(err)}")
