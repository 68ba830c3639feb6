"""Monitoring contexts, targets and the monitoring loop (the kernel's ``kdamond_fn``).

A :class:`Context` owns an operations set, a list of :class:`Target` and the monitoring
attributes. :meth:`Context.run` runs the loop in the calling thread; :meth:`Context.start` runs it
in a background thread. Functions can be run inside the loop with :meth:`Context.call` (the
kernel's ``damon_call()``), and callbacks fire after each aggregation, after each watermarks check
and before termination.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pydamon.core import adjust, tuning
from pydamon.core.attrs import Attrs
from pydamon.core.budget import BudgetGovernor, CpuBudget, as_budget
from pydamon.core.clock import Clock, RealClock
from pydamon.core.pacing import SamplePacer, SampleTimes
from pydamon.core.regions import PAGE_SIZE, Regions
from pydamon.core.schemes import SchemesRunner, new_schemes_runner
from pydamon.core.snapshot import Snapshot

if TYPE_CHECKING:
    from pydamon.core.operations import Operations

#: A callback returns None; it stops monitoring explicitly with :meth:`Context.stop` (which,
#: called from a callback, ends the loop at once, as a non-zero return does in the kernel).
Callback = Callable[["Context"], object]
CallbackKind = Literal["after_aggregation", "after_wmarks_check", "before_terminate"]


@dataclass(eq=False)
class Target:
    """A monitoring target: a process (``pid``) or an address space given by ``ranges``.

    ``ranges`` are user-given initial regions; operations sets that update regions themselves
    (vaddr) leave targets with user-given ranges alone, as the kernel does.
    """

    pid: int | None = None
    ranges: list[tuple[int, int]] | None = None
    regions: Regions = field(default_factory=Regions)
    #: False once the operations set reported the target gone (e.g. the process exited).
    valid: bool = True
    #: Per-target state private to the operations set.
    ops_private: Any = None

    @property
    def target_id(self) -> int | None:
        return self.pid


@dataclass
class _CallRequest:
    fn: Callable[[Context], object]
    repeat: bool
    done: threading.Event = field(default_factory=threading.Event)
    result: object = None
    error: BaseException | None = None
    canceled: bool = False


class CallCanceled(RuntimeError):
    """The monitoring loop ended before a :meth:`Context.call` request ran."""


class Context:
    """A monitoring context: operations set, targets, attributes, schemes and the loop state."""

    def __init__(
        self,
        ops: Operations[Any],
        targets: Iterable[Target] = (),
        attrs: Attrs | None = None,
        *,
        schemes: Sequence[Any] = (),
        seed: int | None = None,
        clock: Clock | None = None,
        min_region_sz: int = PAGE_SIZE,
        cpu_budget: CpuBudget | float | None = None,
    ) -> None:
        # cpu_budget: see set_cpu_budget(); None takes the operations set's default
        attrs = (attrs or Attrs()).with_aggr_samples()
        attrs.validate()
        self.ops = ops
        self.targets: list[Target] = list(targets)
        self._attrs = attrs
        self.min_region_sz = min_region_sz
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.clock: Clock = clock or ops.default_clock() or RealClock()
        self.callbacks: dict[str, list[Callback]] = {
            "after_aggregation": [],
            "after_wmarks_check": [],
            "before_terminate": [],
        }
        self.schemes: list[Any] = []
        self.schemes_runner: SchemesRunner | None = None
        # loop state, counted in passed sample intervals as the kernel does
        self.passed_sample_intervals = 0
        self.next_aggregation_sis = 0
        self.next_ops_update_sis = 0
        self.next_intervals_tune_sis = 0
        self.nr_aggregations = 0
        self.aggregation_start_us = 0
        self.last_max_nr_accesses = 0
        self._last_nr_regions_at_split = 0
        self._sz_limit = min_region_sz
        #: CPU seconds the monitoring loop itself has used (its thread's CPU time).
        self.monitor_cpu_s = 0.0
        self._cpu_start_s = 0.0
        self._run_end_us: int | None = None
        #: paces the samples (honest access windows) and counts what each aggregation achieved
        self.pacer = SamplePacer()
        #: keeps the process's CPU within a budget, if one is set (:meth:`set_cpu_budget`)
        self.budget: BudgetGovernor | None = None
        #: gets the loop's one-line warnings (default: stderr)
        self.on_warning: Callable[[str], object] = _print_warning
        self._set_cpu_budget(ops.default_cpu_budget() if cpu_budget is None else cpu_budget)

        self._calls: list[_CallRequest] = []
        self._calls_lock = threading.Lock()
        self._stop = threading.Event()
        self._running = False
        self._loop_thread: threading.Thread | None = None
        self._loop_error: BaseException | None = None
        if schemes:
            self.set_schemes(schemes)

    # -- attributes -------------------------------------------------------------------------
    @property
    def attrs(self) -> Attrs:
        return self._attrs

    def set_attrs(self, attrs: Attrs) -> None:
        """Change the monitoring attributes, online if the loop runs (``damon_set_attrs()``).

        Monitoring results are rescaled to the new intervals: nr_accesses through its access
        ratio, age by the ratio of aggregation intervals.
        """
        attrs.with_aggr_samples().validate()
        if self._running and threading.current_thread() is not self._loop_thread:
            self.call(lambda ctx: ctx._set_attrs(attrs))
        else:
            self._set_attrs(attrs)

    def _set_attrs(self, attrs: Attrs, by_budget: bool = False) -> None:
        attrs = attrs.with_aggr_samples()
        attrs.validate()
        if self.budget is not None and not by_budget:
            # what is asked changes; the budget's stretch applies to it at once
            self.budget.asked = attrs
            attrs = self.budget.chosen()
        sample = attrs.sample_interval_us or 1
        aggregating = self.passed_sample_intervals < self.next_aggregation_sis
        self.next_aggregation_sis = self.passed_sample_intervals + attrs.aggr_interval_us // sample
        self.next_ops_update_sis = (
            self.passed_sample_intervals + attrs.ops_update_interval_us // sample
        )
        self._update_monitoring_results(attrs, aggregating)
        self._attrs = attrs
        if self.schemes_runner is not None:
            self.schemes_runner.attrs_changed(self)

    def _update_monitoring_results(self, new: Attrs, aggregating: bool) -> None:
        old = self._attrs
        if not (
            old.sample_interval_us
            and old.aggr_interval_us
            and new.sample_interval_us
            and new.aggr_interval_us
        ):
            return
        for t in self.targets:
            t.regions.update_monitoring_results(
                old.max_nr_accesses,
                new.max_nr_accesses,
                (old.aggr_interval_us, new.aggr_interval_us),
                aggregating,
            )

    def set_cpu_budget(self, budget: CpuBudget | float | None) -> None:
        """Keep the whole process's CPU within ``budget`` per cent of one CPU (or a
        :class:`CpuBudget`, see :mod:`pydamon.core.budget`); 0 or None: no budget."""
        if self._running and threading.current_thread() is not self._loop_thread:
            self.call(lambda ctx: ctx._set_cpu_budget(budget))
        else:
            self._set_cpu_budget(budget)

    def _set_cpu_budget(self, value: CpuBudget | float | None) -> None:
        budget, old, self.budget = as_budget(value), self.budget, None
        if old is not None and old.asked != self._attrs:
            self._set_attrs(old.asked)  # what was asked, unstretched
        self.budget = None if budget is None else BudgetGovernor(budget, self._attrs)

    # -- schemes ------------------------------------------------------------------------------
    def set_schemes(self, schemes: Sequence[Any]) -> None:
        """Install DAMOS schemes (objects of :mod:`pydamon.damos`).

        The first schemes get the registered runner (:mod:`pydamon.damos`'s engine, registered
        when the module that defines the schemes was imported) unless one was set before.
        """
        self.schemes = list(schemes)
        if self.schemes and self.schemes_runner is None:
            self.schemes_runner = new_schemes_runner()
        if self.schemes_runner is not None and self._running:
            self.schemes_runner.init(self)

    # -- callbacks and calls ----------------------------------------------------------------------
    def add_callback(self, kind: CallbackKind, fn: Callback) -> None:
        if kind not in self.callbacks:
            raise ValueError(f"unknown callback kind {kind!r}; use one of {list(self.callbacks)}")
        self.callbacks[kind].append(fn)

    def remove_callback(self, kind: CallbackKind, fn: Callback) -> None:
        self.callbacks[kind].remove(fn)

    def _run_callbacks(self, kind: str) -> bool:
        """Run the ``kind`` callbacks; True if one of them stopped monitoring."""
        for fn in list(self.callbacks[kind]):
            if fn(self):
                # A true value used to stop the loop silently; a truthy result by accident
                # (a dict.setdefault, say) must not end monitoring without a word.
                raise TypeError(
                    f"a {kind} callback ({getattr(fn, '__name__', fn)!r}) returned a true value;"
                    " callbacks return None and stop monitoring with ctx.stop()"
                )
        return self._stop.is_set()

    def call(self, fn: Callable[[Context], object], *, wait: bool = True, repeat: bool = False):
        """Run ``fn(ctx)`` inside the monitoring loop, after a sampling (``damon_call()``).

        From another thread while the loop runs, the request is queued and (``wait=True``) this
        returns ``fn``'s result once it ran, raising :class:`CallCanceled` if the loop ended first.
        ``repeat=True`` runs it after every sampling until the loop ends (never waited for).
        From the loop thread, or when the loop is not running, ``fn`` runs at once.
        """
        req = _CallRequest(fn, repeat)
        with self._calls_lock:
            # Checked under the lock the loop takes to cancel pending calls when it ends, so a
            # request is either queued before that cancellation or run here, never lost.
            queue = self._running and threading.current_thread() is not self._loop_thread
            if queue:
                self._calls.append(req)
        if not queue:
            if repeat:
                raise ValueError("repeat calls need a running monitoring loop")
            return fn(self)
        if not wait or repeat:
            return None
        req.done.wait()
        if req.canceled:
            raise CallCanceled("monitoring stopped before the call ran")
        if req.error is not None:
            raise req.error
        return req.result

    def _kdamond_call(self, cancel: bool = False) -> None:
        if not self._calls:  # the common case, checked without the lock (a list read is atomic)
            return
        with self._calls_lock:
            requests = list(self._calls)
        keep = []
        for req in requests:
            if cancel:
                req.canceled = True
            else:
                try:
                    req.result = req.fn(self)
                except Exception as err:  # delivered to the caller, not fatal to the loop
                    req.error = err
                if req.repeat:
                    keep.append(req)
                    continue
            req.done.set()
        with self._calls_lock:
            self._calls = keep + [r for r in self._calls if r not in requests]

    # -- results -----------------------------------------------------------------------------
    @property
    def nr_regions(self) -> int:
        return sum(len(t.regions) for t in self.targets)

    def snapshot(self, target_index: int = 0) -> Snapshot:
        """The current regions of one target as a :class:`Snapshot`.

        Inside ``after_aggregation`` callbacks this is the result of the aggregation just ended.
        """
        t = self.targets[target_index]
        r = t.regions
        return Snapshot(
            target_index=target_index,
            target_id=t.target_id,
            start_us=self.aggregation_start_us,
            end_us=self.clock.now_us(),
            sample_interval_us=self._attrs.sample_interval_us,
            aggr_interval_us=self._attrs.aggr_interval_us,
            nr_samples=self.pacer.nr_samples,
            mean_window_us=self.pacer.mean_window_us,
            starts=r.start.copy(),
            ends=r.end.copy(),
            nr_accesses=r.nr_accesses.copy(),
            age=r.age.copy(),
        )

    def snapshots(self) -> list[Snapshot]:
        return [self.snapshot(i) for i in range(len(self.targets))]

    # -- running ---------------------------------------------------------------------------------
    @property
    def is_running(self) -> bool:
        return self._running

    def stop(self) -> None:
        """Ask the loop to stop after the current step (safe from any thread or callback)."""
        self._stop.set()

    def start(self) -> threading.Thread:
        """Run the monitoring loop in a background thread; :meth:`wait` or :meth:`stop` it."""
        if self._running:
            raise RuntimeError("this context is already running")
        self._stop.clear()
        self._running = True  # before the thread starts, so call() queues from now on
        thread = threading.Thread(target=self._thread_main, name="pydamon-kdamond", daemon=True)
        self._loop_thread = thread
        thread.start()
        return thread

    def _thread_main(self) -> None:
        try:
            self._run_loop(None, None)
        except BaseException as err:  # re-raised by wait()
            self._loop_error = err

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background loop to end; re-raise what ended it. True if it ended."""
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
        """Run the monitoring loop in this thread until stopped, all targets are gone, or a
        limit (monitor clock time, number of aggregations) is reached."""
        for _ in self._loop_in_this_thread(duration_us, nr_aggregations):
            pass

    def aggregations(
        self, *, duration_us: int | None = None, nr_aggregations: int | None = None
    ) -> Iterator[list[Snapshot]]:
        """Run the loop in this thread, yielding each aggregation's snapshots (one per target).

        No callback needed: ``for snaps in ctx.aggregations(nr_aggregations=10): ...``. The
        loop advances only while the caller iterates; it ends at the limits of :meth:`run`, at
        :meth:`stop`, or when the caller stops iterating (``break`` or closing the iterator),
        and then cleans up (``before_terminate`` callbacks, the operations set's ``cleanup``).
        Each snapshot is the aggregation's result right after merging, before reset, as the
        ``after_aggregation`` callbacks see it.
        """
        ready: list[list[Snapshot]] = []

        def grab(ctx: Context) -> None:
            ready.append(ctx.snapshots())

        steps = self._loop_in_this_thread(duration_us, nr_aggregations)
        self.add_callback("after_aggregation", grab)
        try:
            for _ in steps:
                while ready:
                    yield ready.pop(0)
            while ready:  # the aggregation that ended the loop
                yield ready.pop(0)
        finally:
            steps.close()  # the caller stopped iterating: end the loop and clean up now
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

    def _need_stop(self) -> bool:
        if self._stop.is_set():
            return True
        any_valid = False
        for t in self.targets:
            if t.valid and not self.ops.target_valid(self, t):
                t.valid = False
            any_valid = any_valid or t.valid
        return not any_valid

    def _run_loop(self, duration_us: int | None, nr_aggregations: int | None) -> None:
        for _ in self._loop_steps(duration_us, nr_aggregations):
            pass

    def _loop_steps(
        self, duration_us: int | None, nr_aggregations: int | None
    ) -> Generator[None, None, None]:
        """``kdamond_fn()``: yields after every step (the caller may stop iterating to end it)."""
        cpu_start = time.thread_time()
        self._cpu_start_s = cpu_start
        try:
            self.ops.init(self)
            self._sz_limit = self._region_sz_limit()
            self._init_loop_state()
            self.pacer.start()
            if self.budget is not None:
                self.budget.start()
            end_us = None if duration_us is None else self.clock.now_us() + duration_us
            self._run_end_us = end_us
            target_aggregations = (
                None if nr_aggregations is None else self.nr_aggregations + nr_aggregations
            )
            while not self._need_stop():
                if end_us is not None and self.clock.now_us() >= end_us:
                    break
                if target_aggregations is not None and self.nr_aggregations >= target_aggregations:
                    break
                if self._step():
                    break
                yield
        finally:
            try:
                self._run_callbacks("before_terminate")
                self.ops.cleanup(self)
            finally:
                with self._calls_lock:
                    self._running = False
                self._kdamond_call(cancel=True)
                self.monitor_cpu_s = time.thread_time() - self._cpu_start_s

    def _init_loop_state(self) -> None:
        """``kdamond_init_ctx()``."""
        sample = self._attrs.sample_interval_us or 1
        self.passed_sample_intervals = 0
        self.next_aggregation_sis = self._attrs.aggr_interval_us // sample
        self.next_ops_update_sis = self._attrs.ops_update_interval_us // sample
        self.next_intervals_tune_sis = self.next_aggregation_sis * self._attrs.intervals_goal.aggrs
        self.aggregation_start_us = self.clock.now_us()
        if self.schemes_runner is not None:
            self.schemes_runner.init(self)

    def _region_sz_limit(self) -> int:
        """``damon_region_sz_limit()``: the largest region merging may produce."""
        sz = sum(t.regions.total_size for t in self.targets)
        if self._attrs.min_nr_regions:
            sz //= self._attrs.min_nr_regions
        return max(sz, self.min_region_sz)

    def _wait_activation(self) -> bool:
        """``kdamond_wait_activation()``: True if monitoring should stop."""
        runner = self.schemes_runner
        if runner is None or not self.schemes:
            return False
        while not self._need_stop():
            wait_us = runner.wmark_wait_us(self)
            if not wait_us:
                return False
            # run(duration_us=...) is a pydamon limit the kernel has not: it also ends a
            # deactivated wait, or a simulated run whose schemes never activate never ends.
            end_us = self._run_end_us
            now = self.clock.now_us()
            if end_us is not None and now >= end_us:
                return True
            deadline = now + wait_us if end_us is None else min(now + wait_us, end_us)
            self.clock.sleep_until(deadline)
            if self._run_callbacks("after_wmarks_check"):
                return True
            self._kdamond_call()
        return True

    def _step(self) -> bool:
        """One iteration of ``kdamond_fn``'s loop; True to stop."""
        # Read these once: callbacks may change attrs, which applies from the next iteration.
        next_aggregation_sis = self.next_aggregation_sis
        next_ops_update_sis = self.next_ops_update_sis
        sample_interval = self._attrs.sample_interval_us

        if self._wait_activation():
            return True
        # The mean access window is the interval, whatever the prepare and the check take
        # (pydamon.core.pacing); on a virtual clock this sleeps exactly the interval.
        clock = self.clock
        prepare_start = clock.now_us()
        self.ops.prepare_access_checks(self)
        prepare_end = clock.now_us()
        clock.sleep_until(self.pacer.deadline_us(prepare_start, prepare_end, sample_interval))
        check_start = clock.now_us()
        self.passed_sample_intervals += 1
        max_nr_accesses = self.ops.check_accesses(self)
        times = SampleTimes(prepare_start, prepare_end, check_start, clock.now_us())
        self.pacer.sampled(times, self.nr_regions, sample_interval)
        self.last_max_nr_accesses = max_nr_accesses

        stop = False
        aggregated = self.passed_sample_intervals >= next_aggregation_sis
        if aggregated:
            self._merge_regions(max_nr_accesses // 10, self._sz_limit)
            self.nr_aggregations += 1
            # refreshed once per aggregation (not per sample), before the callbacks read it
            self.monitor_cpu_s = time.thread_time() - self._cpu_start_s
            end_us = clock.now_us()
            # with a budget, work beyond the interval is the budget's to fix (it stretches it)
            warning = self.pacer.aggregation_ended(
                self.aggregation_start_us, end_us, sample_interval, warn=self.budget is None
            )
            if warning is not None:
                self.on_warning(warning)
            stop = self._run_callbacks("after_aggregation")
        if stop:
            return True
        self._kdamond_call()
        if self.schemes and self.schemes_runner is not None:
            self.schemes_runner.apply(self)

        sample_interval = self._attrs.sample_interval_us or 1
        if aggregated:
            goal = self._attrs.intervals_goal
            if goal.aggrs and self.passed_sample_intervals >= self.next_intervals_tune_sis:
                # A call may have moved next_aggregation_sis; restore it so the attrs update
                # below does not think it is mid-aggregation and drop the results.
                self.next_aggregation_sis = next_aggregation_sis
                self.next_intervals_tune_sis += self._attrs.aggr_samples * goal.aggrs
                self._tune_intervals()
                sample_interval = self._attrs.sample_interval_us or 1
            chosen = None if self.budget is None else self.budget.step()
            if chosen is not None:
                self.next_aggregation_sis = next_aggregation_sis  # as for the tuning above
                self._set_attrs(chosen, by_budget=True)
                sample_interval = self._attrs.sample_interval_us or 1
            self.next_aggregation_sis = (
                next_aggregation_sis + self._attrs.aggr_interval_us // sample_interval
            )
            self._reset_aggregated()
            self._split_regions()

        if self.passed_sample_intervals >= next_ops_update_sis:
            self.next_ops_update_sis = (
                next_ops_update_sis + self._attrs.ops_update_interval_us // sample_interval
            )
            self.ops.update(self)
            self._sz_limit = self._region_sz_limit()
        return False

    # -- adaptive regions adjustment --------------------------------------------------------------
    def _merge_regions(self, threshold: int, sz_limit: int) -> None:
        adjust.merge_regions(self, threshold, sz_limit)

    def _reset_aggregated(self) -> None:
        for t in self.targets:
            t.regions.reset_aggregated()
        self.aggregation_start_us = self.clock.now_us()
        self.pacer.reset()

    def _split_regions(self) -> None:
        self._last_nr_regions_at_split = adjust.split_regions(self, self._last_nr_regions_at_split)

    # -- monitoring intervals auto-tuning (pydamon.core.tuning) ------------------------------
    def _regions_accesses(self) -> list[tuple[np.ndarray, np.ndarray]]:
        return [(t.regions.sizes, t.regions.nr_accesses) for t in self.targets]

    def intervals_score_bp(self) -> int:
        """``damon_get_intervals_score()``: observed access events per goal, in bp."""
        return tuning.intervals_score_bp(self._attrs, self._regions_accesses())

    def intervals_adaptation_bp(self) -> int:
        return tuning.intervals_adaptation_bp(self.intervals_score_bp())

    def _tune_intervals(self) -> None:
        # tuned from what was asked, not from a CPU budget's stretch of it
        asked = self._attrs if self.budget is None else self.budget.asked
        attrs = tuning.tuned_attrs(asked, self._regions_accesses())
        if attrs is not None:
            self._set_attrs(attrs)


def _print_warning(message: str) -> None:
    print(f"pydamon: warning: {message}", file=sys.stderr, flush=True)
