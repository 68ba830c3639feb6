"""A monitoring context that runs on the kernel's DAMON, with :class:`pydamon.core.Context`'s API.

:class:`KernelContext` takes the same :class:`~pydamon.core.Attrs`, :class:`~pydamon.core.Target`
and :class:`~pydamon.damos.Scheme` objects and gives the same :class:`~pydamon.core.Snapshot`,
scheme stats and tried regions, callbacks after each aggregation, ``run``, ``aggregations``,
``start``/``stop``/``wait`` and ``set_attrs`` (online, through ``commit``). It creates a kdamond
of its own (never touching one it did not create: :class:`~pydamon.kernel.DamonSysfs` refuses),
and turns it off and removes it when it ends: at its limits, on ``stop()``, when its targets are
gone, on an error or a ``KeyboardInterrupt``.

Monitoring results come from the ``damon_aggregated`` tracepoint (tracefs) where there is one,
else from a ``stat`` scheme's tried regions (:mod:`.results`); :attr:`KernelContext.results`
says which.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import fields
from typing import Any, Literal

from pydamon.core.attrs import Attrs
from pydamon.core.context import Target
from pydamon.core.errors import FeatureMissing, TargetGone
from pydamon.core.snapshot import Snapshot
from pydamon.damos.scheme import Scheme, Stats, TriedRegion
from pydamon.kernel.capabilities import KernelCapabilities, probe, require
from pydamon.kernel.config import ContextConfig
from pydamon.kernel.emulate import Emulation, Emulator, native_contexts, plan
from pydamon.kernel.pool import KdamondPool
from pydamon.kernel.results import (
    RESULT_SOURCES,
    TRACEFS,
    TRIED_REGIONS,
    RegionsResult,
    TracefsResults,
    TriedRegionsResults,
    snapshot_schemes,
)
from pydamon.kernel.sysfs import DamonSysfs, KernelConfigError
from pydamon.kernel.sysfs_common import (
    DEFAULT_ROOT,
    KdamondNotOwned,
    KernelFeatureMissing,
    KernelSysfsError,
    SysfsIO,
)
from pydamon.kernel.tracefs import (
    TRACEFS_MOUNTS,
    TracefsIO,
    TracefsUnavailable,
    TraceInstance,
    find_tracefs,
)
from pydamon.runstate import pid_alive

KernelCallback = Callable[["KernelContext"], object]
KernelCallbackKind = Literal["after_aggregation", "before_terminate"]


class KernelContext:
    """A DAMON context run by a kdamond of its own through the sysfs tree at ``root``.

    ``results``: ``"auto"`` (tracefs if usable, else tried regions), ``"tracefs"`` or
    ``"tried_regions"``. ``tracefs``: the tracefs mount point(s) to look at. ``io`` and
    ``tracefs_io`` do the file access (host tests emulate the kernel with them). ``pool``: take
    a kdamond from pydamon's shared pool (several pydamon contexts at once, orphans found after
    a ``kill -9``) instead of adding one of its own.
    """

    def __init__(
        self,
        ops: str,
        targets: Iterable[Target] = (),
        attrs: Attrs | None = None,
        *,
        schemes: Sequence[Scheme] = (),
        root: str = DEFAULT_ROOT,
        io: SysfsIO | None = None,
        results: str = "auto",
        tracefs: str | Sequence[str] | None = None,
        tracefs_io: TracefsIO | None = None,
        poll_s: float = 0.2,
        pool: KdamondPool | None = None,
    ) -> None:
        attrs = (attrs or Attrs()).with_aggr_samples()
        attrs.validate()
        if results not in ("auto", *RESULT_SOURCES):
            raise KernelConfigError(
                f"unknown results source {results!r}; use auto, {', '.join(RESULT_SOURCES)}"
            )
        self.ops = ops
        self.targets: list[Target] = list(targets)
        if not self.targets:
            raise KernelConfigError("a kernel DAMON context needs at least one target")
        self._attrs = attrs
        #: (monotonic µs from when, attrs) of each commit: a result ended before a commit, but
        #: read after it, was made with the attrs before.
        self._attrs_since: list[tuple[int, Attrs]] = []
        self.schemes: list[Scheme] = list(schemes)
        self.root = root
        self.sysfs = DamonSysfs(root, io)
        self._wanted_results = results
        self._tracefs_mounts = (
            (tracefs,) if isinstance(tracefs, str) else tuple(tracefs or TRACEFS_MOUNTS)
        )
        self._tracefs_io = tracefs_io or TracefsIO()
        self.poll_s = poll_s
        self.pool = pool
        self.callbacks: dict[str, list[KernelCallback]] = {
            "after_aggregation": [],
            "before_terminate": [],
        }
        self.caps: KernelCapabilities | None = None
        #: what this kernel lacks and pydamon runs on top (:mod:`.emulate`), known at start
        self.emulation = Emulation()
        self.emulator: Emulator | None = None
        #: "tracefs" or "tried_regions" once chosen (at start), and why.
        self.results: str | None = None
        self.results_reason = ""
        self.kdamond: int | None = None
        self.kdamond_pid: int | None = None
        self.nr_aggregations = 0
        #: Aggregations the trace lost (its buffer overflowed), never turned into snapshots.
        self.dropped_aggregations = 0
        #: CPU seconds this process spent reading the results (the kdamond's are its own).
        self.reader_cpu_s = 0.0
        self._snapshots: list[Snapshot] = []
        self._source: TracefsResults | TriedRegionsResults | None = None
        self._nr_kdamonds_before = 0
        self._stats_base: list[Stats] = [Stats() for _ in self.schemes]
        self._stats_last: list[Stats] = [Stats() for _ in self.schemes]
        self._lock = threading.RLock()  # sysfs commands of the loop vs set_attrs from elsewhere
        self._stop = threading.Event()
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None

    # -- attributes ---------------------------------------------------------------------------
    @property
    def attrs(self) -> Attrs:
        return self._attrs

    def set_attrs(self, attrs: Attrs) -> None:
        """Change the monitoring attributes, online through ``commit`` while running (the
        kernel keeps the regions and rescales their results)."""
        attrs = attrs.with_aggr_samples()
        attrs.validate()
        with self._lock:
            if self._running and self.kdamond is not None and self._kdamond_on():
                self._remember_stats()
                self.sysfs.commit(self.kdamond, self._contexts(attrs), self.caps)
                self._attrs_since.append((time.monotonic_ns() // 1000, self._attrs))
                del self._attrs_since[:-16]  # results older than that are long read
            self._attrs = attrs
            if isinstance(self._source, TriedRegionsResults):
                self._source.attrs = attrs

    @property
    def meta(self) -> dict[str, Any]:
        """Where the results come from and which kdamond runs this context."""
        return {
            "backend": "kernel",
            "results": self.results,
            "results_reason": self.results_reason,
            "kdamond": self.kdamond,
            "kdamond_pid": self.kdamond_pid,
            "root": self.sysfs.fs.root,
            "pool": self.pool.path if self.pool is not None else None,
            "dropped_aggregations": self.dropped_aggregations,
            "emulated": self.emulation.describe(),
        }

    # -- callbacks ------------------------------------------------------------------------------
    def add_callback(self, kind: KernelCallbackKind, fn: KernelCallback) -> None:
        if kind not in self.callbacks:
            raise ValueError(
                f"the kernel backend has no {kind!r} callbacks; use one of {list(self.callbacks)}"
            )
        self.callbacks[kind].append(fn)

    def remove_callback(self, kind: KernelCallbackKind, fn: KernelCallback) -> None:
        self.callbacks[kind].remove(fn)

    def _run_callbacks(self, kind: str) -> bool:
        for fn in list(self.callbacks[kind]):
            if fn(self):
                raise TypeError(
                    f"a {kind} callback ({getattr(fn, '__name__', fn)!r}) returned a true value;"
                    " callbacks return None and stop monitoring with ctx.stop()"
                )
        return self._stop.is_set()

    # -- results --------------------------------------------------------------------------------
    @property
    def nr_regions(self) -> int:
        return sum(s.nr_regions for s in self._snapshots)

    def snapshot(self, target_index: int = 0) -> Snapshot:
        """The last aggregation's regions of one target (in callbacks: the one just ended)."""
        if not self._snapshots:
            raise RuntimeError("no aggregation has ended yet")
        return self._snapshots[target_index]

    def snapshots(self) -> list[Snapshot]:
        return list(self._snapshots)

    def update_stats(self) -> list[Stats]:
        """Read the schemes' stats from the kernel into ``scheme.stats`` (and return them).

        Where a commit made the kernel start its counters again (older kernels recreate the
        schemes), the counts before it are kept: stats never go backwards.
        """
        k = self._need_kdamond()
        with self._lock:
            kernel = self.sysfs.update_stats(k)[0][: len(self.schemes)]
        for i, (scheme, now) in enumerate(zip(self.schemes, kernel)):
            last = self._stats_last[i]
            if any(getattr(now, f.name) < getattr(last, f.name) for f in fields(Stats)):
                self._stats_base[i] = _add(self._stats_base[i], last)
            self._stats_last[i] = now
            scheme.stats = _add(self._stats_base[i], now)
        return [s.stats for s in self.schemes]

    def _remember_stats(self) -> None:
        if self.schemes:
            try:
                self.update_stats()
            except KernelSysfsError:
                pass  # the kdamond ended meanwhile: nothing left to keep

    def update_tried_regions(self) -> list[list[TriedRegion]]:
        """Read the regions each scheme was tried on during the next apply interval into
        ``scheme.tried_regions`` (6.2+; the kernel fills them then, so this waits for it)."""
        tried = self._read_tried()
        return tried[: len(self.schemes)]

    def _read_tried(self) -> list[list[TriedRegion]]:
        k = self._need_kdamond()
        if self.caps is not None and not self.caps.has("tried_regions"):
            raise KernelFeatureMissing([("DAMOS tried regions", "6.2")])
        with self._lock:
            tried = self.sysfs.tried_regions(k)[0]
        for scheme, regions in zip(self.schemes, tried):
            scheme.tried_regions = regions
        return tried

    def _need_kdamond(self) -> int:
        if self.kdamond is None or not self._running:
            raise RuntimeError("this kernel context is not running")
        return self.kdamond

    # -- running --------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Ask the loop to stop (safe from any thread or callback); the kdamond goes off."""
        self._stop.set()

    def start(self) -> threading.Thread:
        """Run in a background thread; :meth:`wait` or :meth:`stop` it."""
        if self._running:
            raise RuntimeError("this context is already running")
        self._stop.clear()
        self._running = True
        thread = threading.Thread(target=self._thread_main, name="pydamon-kernel", daemon=True)
        self._loop_thread = thread
        thread.start()
        return thread

    def _thread_main(self) -> None:
        try:
            for _ in self._loop_steps(None, None):
                pass
        except BaseException as err:  # re-raised by wait()
            self._loop_error = err

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run to end; re-raise what ended it. True if it ended."""
        thread = self._loop_thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                return False
        if self._loop_error is not None:
            err, self._loop_error = self._loop_error, None
            raise err
        return True

    def run(self, *, duration_us: int | None = None, nr_aggregations: int | None = None) -> None:
        """Monitor in this thread until stopped, the targets are gone, or a limit is reached
        (wall-clock time, number of aggregations)."""
        for _ in self._loop_in_this_thread(duration_us, nr_aggregations):
            pass

    def aggregations(
        self, *, duration_us: int | None = None, nr_aggregations: int | None = None
    ) -> Iterator[list[Snapshot]]:
        """Monitor in this thread, yielding each aggregation's snapshots (one per target); the
        kdamond goes off when the caller stops iterating."""
        ready: list[list[Snapshot]] = []

        def grab(ctx: KernelContext) -> None:
            ready.append(ctx.snapshots())

        steps = self._loop_in_this_thread(duration_us, nr_aggregations)
        self.add_callback("after_aggregation", grab)
        try:
            for _ in steps:
                while ready:
                    yield ready.pop(0)
            while ready:
                yield ready.pop(0)
        finally:
            steps.close()
            self.remove_callback("after_aggregation", grab)

    def _loop_in_this_thread(
        self, duration_us: int | None, nr_aggregations: int | None
    ) -> Generator[None, None, None]:
        if self._running:
            raise RuntimeError("this context is already running")
        self._stop.clear()
        self._running = True
        self._loop_thread = threading.current_thread()
        yield from self._loop_steps(duration_us, nr_aggregations)

    def _loop_steps(
        self, duration_us: int | None, nr_aggregations: int | None
    ) -> Generator[None, None, None]:
        cpu_start = time.thread_time()
        end_s = None if duration_us is None else time.monotonic() + duration_us / 1e6
        target = None if nr_aggregations is None else self.nr_aggregations + nr_aggregations
        try:
            self._setup()
            while not self._stop.is_set():
                if end_s is not None and time.monotonic() >= end_s:
                    break
                if target is not None and self.nr_aggregations >= target:
                    break
                result = self._next_result(end_s)
                if result is None:
                    if not self._kdamond_on():
                        break  # every target is gone: the kdamond stopped itself
                    continue
                self._deliver(result)
                self._emulate()
                stop = self._run_callbacks("after_aggregation")
                self.reader_cpu_s = time.thread_time() - cpu_start
                if stop:
                    break
                if self.schemes and self.results == TRACEFS:
                    # after the callbacks: the kernel answers at its next aggregation, by
                    # when that aggregation's trace is in; callbacks then see fresh stats
                    self._update_stats_if_on()
                yield
        finally:
            try:
                self._teardown()
            finally:
                try:
                    self._run_callbacks("before_terminate")
                finally:
                    self._running = False
                    self.reader_cpu_s = time.thread_time() - cpu_start

    def _next_result(self, end_s: float | None) -> RegionsResult | None:
        source = self._source
        if isinstance(source, TracefsResults):
            timeout = self.poll_s
            if end_s is not None:
                timeout = max(0.0, min(timeout, end_s - time.monotonic()))
            result = source.next(timeout)
            self.dropped_aggregations = source.dropped
            return result
        assert isinstance(source, TriedRegionsResults)
        try:
            tried = self._read_tried()
        except KernelSysfsError:
            if not self._kdamond_on():
                return None
            raise
        result = source.next_from(tried)
        if result is not None and self.schemes:
            self._update_stats_if_on()
        return result

    def _update_stats_if_on(self) -> None:
        try:
            self.update_stats()
        except KernelSysfsError:
            if self._kdamond_on():
                raise

    def _deliver(self, result: RegionsResult) -> None:
        previous_end = self._snapshots[0].end_us if self._snapshots else None
        attrs = self._attrs_at(result.end_us)
        start_us = (
            previous_end if previous_end is not None else result.end_us - attrs.aggr_interval_us
        )
        self._snapshots = [
            Snapshot(
                target_index=i,
                target_id=t.pid,
                start_us=start_us,
                end_us=result.end_us,
                sample_interval_us=attrs.sample_interval_us,
                aggr_interval_us=attrs.aggr_interval_us,
                starts=result.starts[i],
                ends=result.ends[i],
                nr_accesses=result.nr_accesses[i],
                age=result.ages[i],
            )
            for i, t in enumerate(self.targets)
        ]
        self.nr_aggregations += 1

    def _emulate(self) -> None:
        """Step what pydamon runs on top of this kernel; commit what changed."""
        if self.emulator is None or not self.emulation.any:
            return
        attrs, quotas_changed = self.emulator.after_aggregation(self._attrs, self._snapshots)
        if attrs is not None or quotas_changed:
            self.set_attrs(attrs or self._attrs)

    def _attrs_at(self, end_us: int) -> Attrs:
        if self._source is None or not self._source.monotonic:
            return self._attrs
        for since_us, before in self._attrs_since:
            if end_us < since_us:
                return before
        return self._attrs

    def _kdamond_on(self) -> bool:
        if self.kdamond is None:
            return False
        try:
            return self.sysfs.state(self.kdamond) == "on"
        except KernelSysfsError:
            return False

    # -- setting up and tearing down ------------------------------------------------------------
    def _contexts(self, attrs: Attrs) -> list[ContextConfig]:
        schemes = list(self.schemes)
        if self.results == TRIED_REGIONS:
            schemes += snapshot_schemes(len(self.targets))
        asked = [ContextConfig(ops=self.ops, attrs=attrs, targets=self.targets, schemes=schemes)]
        sizes = self.emulator.quota_sizes if self.emulator is not None else {}
        return native_contexts(self.emulation, asked, sizes)

    def _setup(self) -> None:
        for i, t in enumerate(self.targets):
            if t.pid is not None and not pid_alive(t.pid):
                raise TargetGone(f"target {i}: process {t.pid} does not exist")
        if self.pool is not None:  # refuses foreign kdamonds; owned: the pool's
            self.kdamond = self.pool.acquire(self.sysfs)
        nr = self.sysfs.nr_kdamonds()
        foreign = [k for k in range(nr) if k not in self.sysfs.owned]
        if foreign:
            listed = ", ".join(str(k) for k in foreign)
            raise KdamondNotOwned(
                f"{self.sysfs.fs.path('kdamonds')} has kdamond(s) {listed} that pydamon did not "
                "create; pydamon leaves the kernel's DAMON alone (writing nr_kdamonds would "
                "recreate them)"
            )
        spare = self.sysfs.owned if self.kdamond is None else {self.kdamond}
        self.caps = probe(self.root, self.sysfs.fs.io, stage=True, owned=spare)
        self._choose_results(self.caps)
        self.emulation = plan(self.caps, self._attrs, self.schemes, len(self.targets))
        self.emulator = Emulator(self.emulation, self.schemes)
        self.emulator.start()
        contexts = self._contexts(self._attrs)
        require(self.caps, contexts)
        self._nr_kdamonds_before = nr
        if self.kdamond is None:
            self.kdamond = self.sysfs.add_kdamonds(1)[0]
        self.sysfs.write(self.kdamond, contexts, self.caps)
        if self.results == TRACEFS:
            root = find_tracefs(self._tracefs_mounts, self._tracefs_io)
            self._source = TracefsResults(TraceInstance(root, self._tracefs_io), len(self.targets))
        else:
            self._source = TriedRegionsResults(len(self.targets), self._attrs)
        self._source.open()  # before the kdamond starts: no aggregation is missed
        self.sysfs.start(self.kdamond)
        self.kdamond_pid = self.sysfs.pid(self.kdamond)
        self._source.started(self.kdamond_pid)

    def _choose_results(self, caps: KernelCapabilities) -> None:
        wanted = self._wanted_results
        tracefs_error: FeatureMissing | None = None
        if wanted in ("auto", TRACEFS):
            try:
                root = find_tracefs(self._tracefs_mounts, self._tracefs_io)
                self.results, self.results_reason = TRACEFS, f"damon_aggregated trace at {root}"
                return
            except TracefsUnavailable as err:
                if wanted == TRACEFS:
                    raise
                tracefs_error = err
        if not caps.has("tried_regions"):
            missing = "DAMOS tried regions (Linux 6.2+)"
            if tracefs_error is not None:
                raise FeatureMissing(
                    f"no monitoring results: {tracefs_error}, and this kernel's DAMON lacks "
                    f"{missing} to read snapshots from instead"
                )
            raise KernelFeatureMissing([("DAMOS tried regions", "6.2")])
        if len(self.targets) > 1 and "target" not in caps.filter_types:
            what = "per-target snapshots from tried regions (the DAMOS target filter)"
            raise KernelFeatureMissing([(what, "6.6")])
        self.results = TRIED_REGIONS
        self.results_reason = (
            f"stat scheme tried regions ({tracefs_error})" if tracefs_error else "as asked"
        )

    def _teardown(self) -> None:
        """Kdamond off, trace instance gone, ``nr_kdamonds`` as it was; each step whatever the
        others did."""
        errors: list[BaseException] = []
        k = self.kdamond
        if k is not None:
            try:
                if self._kdamond_on():
                    if self.schemes:
                        self._remember_stats()
                    self.sysfs.stop(k)
            except Exception as err:
                errors.append(err)
        if self._source is not None:
            try:
                self._source.close()
            except Exception as err:
                errors.append(err)
            self._source = None
        if k is not None:
            try:
                self._remove_kdamond(k)
            except Exception as err:
                errors.append(err)
            self.kdamond = None
        if errors:
            raise errors[0]

    def _remove_kdamond(self, k: int) -> None:
        if self.pool is not None:
            self.pool.release(self.sysfs, k)
            return
        fs = self.sysfs.fs
        nr = self.sysfs.nr_kdamonds()
        mine = all(i in self.sysfs.owned for i in range(nr))
        if nr == k + 1 and mine and all(self.sysfs.state(i) == "off" for i in range(nr)):
            fs.write("kdamonds/nr_kdamonds", self._nr_kdamonds_before)
            self.sysfs.owned -= set(range(self._nr_kdamonds_before, nr))


def _add(a: Stats, b: Stats) -> Stats:
    return Stats(**{f.name: getattr(a, f.name) + getattr(b, f.name) for f in fields(Stats)})
