"""Text and image renderings of record reports (terminal heatmap, raw form, plots)."""

from __future__ import annotations

from typing import Any

import numpy as np

from pydamon.record.model import Record
from pydamon.units import format_duration_us as _time


def heatmap_raw(grid: np.ndarray, time_edges: np.ndarray, addr_edges: np.ndarray) -> str:
    """damo's ``--output raw``: ``<time_ns> <address> <heat>`` per cell."""
    out = []
    for i, row in enumerate(grid.tolist()):
        t_ns = int(time_edges[i] * 1000)
        for j, v in enumerate(row):
            out.append(f"{t_ns} {int(addr_edges[j])} {v:.6f}")
    return "\n".join(out)


def heatmap_image(
    hm: Any,
    path: str,
    *,
    title: str = "",
    time_origin_us: int = 0,
    size_px: tuple[int, int] = (1024, 768),
) -> None:
    """Write a :class:`pydamon.report.heatmap.Heatmap` to ``path`` (png, svg, pdf, jpg)."""
    plt = _pyplot()
    dpi = 100
    fig, ax = plt.subplots(figsize=(size_px[0] / dpi, size_px[1] / dpi), dpi=dpi)
    t0 = (hm.time_edges_us[0] - time_origin_us) / 1e6
    t1 = (hm.time_edges_us[-1] - time_origin_us) / 1e6
    width_mib = hm.bytes_per_column * hm.address_bins / 2**20
    grid = np.ma.masked_invalid(hm.grid)
    cmap = plt.get_cmap("inferno").copy()
    cmap.set_bad("#bbbbbb")
    img = ax.imshow(
        grid,
        aspect="auto",
        origin="lower",
        cmap=cmap,
        extent=(0, width_mib, t0, t1),
        interpolation="nearest",
        vmin=0.0,
        vmax=max(float(np.nanmax(hm.grid)) if np.isfinite(hm.grid).any() else 0.0, 1e-9),
    )
    lo = hm.spans[0][0] if hm.spans else 0
    gaps = " (holes between spans collapsed)" if len(hm.spans) > 1 else ""
    ax.set_xlabel(f"address offset from {lo:#x} (MiB){gaps}")
    ax.set_ylabel("time (s)")
    ax.set_title(title or "access heatmap")
    fig.colorbar(img, ax=ax, label="access rate")
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def line_plot(
    xs: np.ndarray, ys: np.ndarray, path: str, *, xlabel: str, ylabel: str, title: str = ""
) -> None:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(8, 5), dpi=100)
    ax.plot(xs, ys)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.grid(True, alpha=0.3)
    fig.savefig(path)
    plt.close(fig)


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise RuntimeError("image output needs matplotlib: pip install 'pydamon[plot]'") from None
    return plt


def raw_form(rec: Record, *, max_snapshots: int | None = None) -> str:
    """damo's raw text form of a record (``report raw`` / ``report access --raw_form``)."""
    lines = []
    if not rec.nr_snapshots:
        return ""
    base = int(rec.snap_start_us.min())
    lines.append(f"base_time_absolute: {_time(base)}")
    lines.append("")
    n = rec.nr_snapshots if max_snapshots is None else min(rec.nr_snapshots, max_snapshots)
    rec = rec.slice(0, n)  # decode only the snapshots shown
    for i in range(n):
        lo, hi = int(rec.region_offsets[i]), int(rec.region_offsets[i + 1])
        s, e = int(rec.snap_start_us[i]), int(rec.snap_end_us[i])
        lines.append(f"monitoring_start:    {_time(s - base):>16}")
        lines.append(f"monitoring_end:      {_time(e - base):>16}")
        lines.append(f"monitoring_duration: {_time(e - s):>16}")
        tid = rec.target_id_of(int(rec.snap_target[i]))
        lines.append(f"target_id: {tid if tid is not None else int(rec.snap_target[i])}")
        lines.append(f"nr_regions: {hi - lo}")
        for rs, re_, nr in zip(
            rec.starts[lo:hi].tolist(), rec.ends[lo:hi].tolist(), rec.nr_accesses[lo:hi].tolist()
        ):
            lines.append(f"{rs:x}-{re_:x}({re_ - rs:>10}):\t{nr}")
        lines.append("")
    return "\n".join(lines)
