"""``stat``: DAMON_STAT in user space — memory bandwidth and idle-time percentiles.

Monitors physical memory (default), a process (``--ops vaddr --pid N``) or a simulated workload
(``--ops sim``) with the monitoring intervals auto-tuned for a 4% access-events goal (the kernel's
``RECOMMENDED_INTERVALS_GOAL``) and, at most every ``refresh_interval_ms`` of monitor time
(computed at the end of an aggregation, so the numbers always describe a whole aggregation):

- ``estimated_memory_bandwidth``: sum(size * nr_accesses) * 1e6 / aggr_interval_us, bytes/s;
- ``memory_idle_ms_percentiles``: p0..p100 of the per-byte idle time, where a region's idle time
  is its age in ms if it was not accessed in the last aggregation and minus its age otherwise
  (the kernel's v6.18 signed idle time).

Exported as text, JSON (``pydamon module run stat --format json`` / ``status --json``) and, with
``--metrics-port``, as Prometheus metrics on ``http://127.0.0.1:PORT/metrics``.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from pydamon.core import (
    RECOMMENDED_INTERVALS_GOAL,
    Attrs,
    Context,
    IntervalsGoal,
    Operations,
    Target,
)
from pydamon.extras import install_hint
from pydamon.kernel.context import KernelContext
from pydamon.modules.base import Module, ModuleError, Param, Params
from pydamon.modules.targets import TARGET_PARAMS, check_target_params, make_ops_targets
from pydamon.units import format_bytes

PERCENTILES = tuple(range(101))


def estimated_memory_bandwidth(
    sizes: np.ndarray, nr_accesses: np.ndarray, aggr_interval_us: int
) -> int:
    """Bytes per second: ``sum(size * nr_accesses) * 1e6 / aggr_interval_us`` (DAMON_STAT)."""
    access_bytes = int((sizes.astype(np.int64) * nr_accesses.astype(np.int64)).sum())
    return access_bytes * 1_000_000 // max(aggr_interval_us, 1)


def idle_time_ms(nr_accesses: np.ndarray, age: np.ndarray, aggr_interval_us: int) -> np.ndarray:
    """Per-region idle time in ms: age if not accessed, else minus age (DAMON_STAT)."""
    age_ms = age.astype(np.int64) * aggr_interval_us // 1000
    return np.where(nr_accesses == 0, age_ms, -age_ms)


def idle_ms_percentiles(sizes: np.ndarray, idle_ms: np.ndarray) -> list[int]:
    """p0..p100 of the per-byte idle time: percentile p is the idle time of the first region,
    in idle-time order, at which the accumulated size reaches p% of the total."""
    if not len(sizes):
        return [0] * len(PERCENTILES)
    order = np.argsort(idle_ms, kind="stable")
    sorted_idle = idle_ms[order]
    cum = np.cumsum(sizes[order].astype(np.int64))
    reached = cum * 100 // cum[-1]
    idx = np.searchsorted(reached, np.asarray(PERCENTILES), side="left")
    idx = np.minimum(idx, len(sorted_idle) - 1)
    return [int(v) for v in sorted_idle[idx]]


def compute_stats(ctx: Context) -> dict[str, Any]:
    """DAMON_STAT's numbers over every target of ``ctx`` (call after an aggregation)."""
    aggr_us = ctx.attrs.aggr_interval_us
    if isinstance(ctx, KernelContext):  # the kdamond's regions: the last aggregation's
        snaps = ctx.snapshots()
        sizes = [s.ends - s.starts for s in snaps]
        nrs, ages = [s.nr_accesses for s in snaps], [s.age for s in snaps]
    else:
        valid = [t for t in ctx.targets if t.valid]
        sizes = [t.regions.sizes for t in valid]
        nrs, ages = [t.regions.nr_accesses for t in valid], [t.regions.age for t in valid]
    if not sizes:
        return {}
    size = np.concatenate(sizes)
    nr = np.concatenate(nrs)
    age = np.concatenate(ages)
    return {
        "estimated_memory_bandwidth": estimated_memory_bandwidth(size, nr, aggr_us),
        "memory_idle_ms_percentiles": idle_ms_percentiles(size, idle_time_ms(nr, age, aggr_us)),
        "aggr_interval_us": aggr_us,
        "sample_interval_us": ctx.attrs.sample_interval_us,
        "monitored_bytes": int(size.sum()),
        "nr_regions": int(len(size)),
        "nr_aggregations": ctx.nr_aggregations,
        "monitor_time_us": ctx.clock.now_us(),
    }


class StatModule(Module):
    name = "stat"
    description = "DAMON_STAT: estimated memory bandwidth and idle-time percentiles"
    params = (
        *TARGET_PARAMS,
        Param(
            "refresh_interval_ms",
            int,
            5000,
            "refresh the numbers at most this often (monitor time)",
            unit="ms",
            min=0,
        ),
        Param("autotune_intervals", bool, True, "auto-tune intervals for 4% access events"),
        Param("sample_interval", int, 5000, "initial sampling interval", unit="us", min=1),
        Param("aggr_interval", int, 100_000, "initial aggregation interval", unit="us", min=1),
        Param("min_nr_regions", int, 10, "minimum number of regions", min=3),
        Param("max_nr_regions", int, 1000, "maximum number of regions", min=3),
        Param(
            "metrics_port",
            int,
            None,
            "serve Prometheus metrics on this port (0: any free port)",
            optional=True,
            min=0,
            max=65535,
            online=False,
        ),
        Param("metrics_addr", str, "127.0.0.1", "address the metrics endpoint binds", online=False),
    )

    def __init__(self, **values: Any) -> None:
        super().__init__(**values)
        self._stats: dict[str, Any] = {}
        self._stats_lock = threading.Lock()
        self._next_refresh_us: int | None = None
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def check_params(cls, p: Params) -> None:
        check_target_params(p)
        Attrs(
            sample_interval_us=p.sample_interval,
            aggr_interval_us=p.aggr_interval,
            min_nr_regions=p.min_nr_regions,
            max_nr_regions=p.max_nr_regions,
        ).validate()

    def make_targets(self) -> tuple[Operations[Any], list[Target]]:
        return make_ops_targets(self.p)

    def make_attrs(self) -> Attrs:
        p = self.p
        goal = RECOMMENDED_INTERVALS_GOAL if p.autotune_intervals else IntervalsGoal()
        sample = p.sample_interval
        if goal.enabled:
            sample = min(max(sample, goal.min_sample_us), goal.max_sample_us)
        return Attrs(
            sample_interval_us=sample,
            aggr_interval_us=max(p.aggr_interval, sample),
            min_nr_regions=p.min_nr_regions,
            max_nr_regions=p.max_nr_regions,
            intervals_goal=goal,
        )

    def commit(self, ctx: Context, old: Params) -> None:
        # Keep the auto-tuned intervals unless an interval parameter itself changed.
        names = (
            "autotune_intervals",
            "sample_interval",
            "aggr_interval",
            "min_nr_regions",
            "max_nr_regions",
        )
        if any(getattr(old, n) != getattr(self.p, n) for n in names):
            ctx.set_attrs(self.make_attrs())
        self._next_refresh_us = None

    def build(self) -> list[Context]:
        contexts = super().build()
        if self.p.metrics_port is not None:
            self._start_server()
        return contexts

    def after_aggregation(self, ctx: Context) -> None:
        now = ctx.clock.now_us()
        if self._next_refresh_us is not None and now < self._next_refresh_us:
            return None
        self._next_refresh_us = now + self.p.refresh_interval_ms * 1000
        stats = compute_stats(ctx)
        if self._server is not None:
            stats["metrics_url"] = self.metrics_url
        with self._stats_lock:
            self._stats = stats
        return None

    def stats(self) -> dict[str, Any]:
        with self._stats_lock:
            return dict(self._stats)

    @classmethod
    def format_stats(cls, stats: Mapping[str, Any]) -> str:
        if not stats.get("memory_idle_ms_percentiles"):
            return "no aggregation finished yet"
        pct = stats["memory_idle_ms_percentiles"]
        shown = " ".join(f"p{p}={pct[p]}" for p in (0, 1, 5, 25, 50, 75, 95, 99, 100))
        bandwidth = format_bytes(stats["estimated_memory_bandwidth"], precision=1)
        lines = [
            f"estimated_memory_bandwidth: {bandwidth}/s",
            f"memory_idle_ms_percentiles: {shown}",
            f"monitored: {stats['monitored_bytes'] / 2**20:.1f} MiB in {stats['nr_regions']} "
            f"regions; intervals sample {stats['sample_interval_us']} us, "
            f"aggr {stats['aggr_interval_us']} us",
        ]
        if "metrics_url" in stats:
            lines.append(f"metrics: {stats['metrics_url']}")
        return "\n".join(lines)

    # -- Prometheus endpoint -------------------------------------------------------------------
    @property
    def metrics_url(self) -> str:
        if self._server is None:
            return ""
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/metrics"

    def prometheus_text(self) -> bytes:
        """The metrics in the Prometheus text format (prometheus-client's exposition)."""
        try:
            from prometheus_client import CollectorRegistry, generate_latest
            from prometheus_client.core import GaugeMetricFamily
        except ImportError:
            raise ModuleError(
                "Prometheus metrics need prometheus-client: "
                + install_hint("prometheus-client", "metrics")
            ) from None
        module = self

        class Collector:
            def collect(self) -> Any:
                stats = module.stats()
                if not stats:
                    return
                prefix = "pydamon_stat_"
                yield GaugeMetricFamily(
                    prefix + "estimated_memory_bandwidth_bytes_per_second",
                    "Estimated memory bandwidth (DAMON_STAT)",
                    value=stats["estimated_memory_bandwidth"],
                )
                idle = GaugeMetricFamily(
                    prefix + "memory_idle_ms",
                    "Per-byte idle time percentiles in ms; negative: accessed for that long",
                    labels=["percentile"],
                )
                for p, value in enumerate(stats["memory_idle_ms_percentiles"]):
                    idle.add_metric([str(p)], value)
                yield idle
                for key, help_text in (
                    ("aggr_interval_us", "Current (auto-tuned) aggregation interval"),
                    ("sample_interval_us", "Current (auto-tuned) sampling interval"),
                    ("monitored_bytes", "Bytes monitored"),
                    ("nr_regions", "Number of monitoring regions"),
                ):
                    yield GaugeMetricFamily(prefix + key, help_text, value=stats[key])

        registry = CollectorRegistry(auto_describe=False)
        registry.register(Collector())
        return bytes(generate_latest(registry))

    def _start_server(self) -> None:
        self.prometheus_text()  # fail early if prometheus-client is missing
        module = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                if self.path.split("?")[0] not in ("/metrics", "/"):
                    self.send_error(404)
                    return
                body = module.prometheus_text()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        try:
            server = ThreadingHTTPServer((self.p.metrics_addr, self.p.metrics_port), Handler)
        except OSError as err:
            raise ModuleError(
                f"cannot serve metrics on {self.p.metrics_addr}:{self.p.metrics_port}: "
                f"{err.strerror}; pick another --metrics-port"
            ) from None
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, name="pydamon-metrics", daemon=True).start()
        self._server = server

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
