"""Text and image renderings of record reports (terminal heatmap, raw form, plots)."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from pydamon.extras import install_hint
from pydamon.record.model import Record
from pydamon.report.heatmap import FloatArray, Heatmap
from pydamon.report.wss import WssStats
from pydamon.units import format_bytes
from pydamon.units import format_duration_us as format_time_us

#: 256-colour background codes per digit, dark to bright ("flame").
FLAME_COLORS = (16, 52, 88, 124, 160, 196, 202, 208, 214, 226)
GRAY_COLORS = (232, 234, 236, 238, 241, 244, 247, 250, 253, 255)


def heat_digits(grid: FloatArray, scale: str = "absolute") -> npt.NDArray[np.int64]:
    """0-9 per cell (-1 where NaN). ``absolute``: rate 0 -> 0, rate 1 -> 9; ``relative``: the
    grid's minimum -> 0 and maximum -> 9 (damo's)."""
    g = np.asarray(grid, dtype=np.float64)
    valid = ~np.isnan(g)
    if scale == "relative" and valid.any():
        lo, hi = float(g[valid].min()), float(g[valid].max())
        norm = (g - lo) / (hi - lo) if hi > lo else np.zeros_like(g)
    elif scale in ("absolute", "relative"):
        norm = g
    else:
        raise ValueError(f"unknown heat scale {scale!r}; use absolute or relative")
    digits = np.floor(np.clip(np.nan_to_num(norm), 0.0, 1.0) * 9 + 0.5).astype(np.int64)
    return np.where(valid, digits, -1)


def heatmap_lines(
    hm: Heatmap, *, color: bool = False, colorset: str = "flame", scale: str = "absolute"
) -> list[str]:
    """The grid as text rows (time goes down), one character per cell, without the footer."""
    digits = heat_digits(hm.grid, scale)
    palette = GRAY_COLORS if colorset == "gray" else FLAME_COLORS
    lines = []
    for row in digits.tolist():
        if color:
            cells = [
                " " if d < 0 else f"\x1b[48;5;{palette[d]}m\x1b[38;5;{15 if d < 6 else 16}m{d}"
                for d in row
            ]
            lines.append("".join(cells) + "\x1b[0m")
        else:
            lines.append("".join(" " if d < 0 else str(d) for d in row))
    return lines


def heatmap_footer(hm: Heatmap, scale: str = "absolute") -> list[str]:
    t0, t1 = float(hm.time_edges_us[0]), float(hm.time_edges_us[-1])
    if hm.spans:
        lo, hi = hm.spans[0][0], hm.spans[-1][1]
        space = f"{lo:#x}-{hi:#x}: {format_bytes(hm.span_bytes)}"
        if len(hm.spans) > 1:
            space += f" in {len(hm.spans)} spans, gaps between them collapsed"
    else:
        space = "nothing monitored"
    heat = "access rate 0%..100%" if scale == "absolute" else "relative to this map's min..max"
    return [
        f"# access_frequency: 0123456789 ({heat})",
        f"# x-axis: space ({space})",
        f"# y-axis: time ({t0:.0f}-{t1:.0f} us: {format_time_us(t1 - t0)})",
        f"# resolution: {hm.address_bins}x{hm.time_bins} "
        f"({format_bytes(hm.bytes_per_column)} and "
        f"{format_time_us((t1 - t0) / max(hm.time_bins, 1))} for each character)",
    ]


def render_heatmap(
    hm: Heatmap,
    *,
    color: bool = False,
    colorset: str = "flame",
    scale: str = "absolute",
    footer: bool = True,
) -> str:
    """damo's terminal heatmap: digit rows, then the ``#`` footer."""
    lines = heatmap_lines(hm, color=color, colorset=colorset, scale=scale)
    if footer:
        lines += heatmap_footer(hm, scale)
    return "\n".join(lines)


def heatmap_raw(grid: np.ndarray, time_edges: np.ndarray, addr_edges: np.ndarray) -> str:
    """damo's ``--output raw``: ``<time_ns> <address> <heat>`` per cell."""
    out = []
    for i, row in enumerate(grid.tolist()):
        t_ns = int(time_edges[i] * 1000)
        for j, v in enumerate(row):
            out.append(f"{t_ns} {int(addr_edges[j])} {v:.6f}")
    return "\n".join(out)


def heatmap_image(
    hm: Heatmap,
    path: str,
    *,
    title: str = "",
    time_origin_us: int = 0,
    size_px: tuple[int, int] = (1024, 768),
) -> None:
    """Write a :class:`~pydamon.report.heatmap.Heatmap` to ``path`` (png, svg, pdf, jpg)."""
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
        raise RuntimeError(
            f"image output needs matplotlib: {install_hint('matplotlib', 'plot')}"
        ) from None
    return plt


def raw_form(rec: Record, *, max_snapshots: int | None = None) -> str:
    """damo's raw text form of a record (``report raw`` / ``report access --raw_form``)."""
    lines = []
    if not rec.nr_snapshots:
        return ""
    base = int(rec.snap_start_us.min())
    lines.append(f"base_time_absolute: {format_time_us(base)}")
    lines.append("")
    n = rec.nr_snapshots if max_snapshots is None else min(rec.nr_snapshots, max_snapshots)
    rec = rec.slice(0, n)  # decode only the snapshots shown
    for i in range(n):
        lo, hi = int(rec.region_offsets[i]), int(rec.region_offsets[i + 1])
        s, e = int(rec.snap_start_us[i]), int(rec.snap_end_us[i])
        lines.append(f"monitoring_start:    {format_time_us(s - base):>16}")
        lines.append(f"monitoring_end:      {format_time_us(e - base):>16}")
        lines.append(f"monitoring_duration: {format_time_us(e - s):>16}")
        tid = rec.target_id_of(int(rec.snap_target[i]))
        lines.append(f"target_id: {tid if tid is not None else int(rec.snap_target[i])}")
        lines.append(f"nr_regions: {hi - lo}")
        for rs, re_, nr in zip(
            rec.starts[lo:hi].tolist(), rec.ends[lo:hi].tolist(), rec.nr_accesses[lo:hi].tolist()
        ):
            lines.append(f"{rs:x}-{re_:x}({re_ - rs:>10}):\t{nr}")
        lines.append("")
    return "\n".join(lines)


def render_wss(stats: WssStats, *, bar_width: int = 50, title: str | None = None) -> str:
    """damo-style table: ``# <percentile> <wss>``, the average, one row per percentile with a
    bar relative to the largest value."""
    lines = ["# <percentile> <wss>"]
    if title:
        lines.append(f"# {title}")
    lines.append(f"# avg\t{format_bytes(stats.avg)}")
    top = max((v for _, v in stats.percentiles), default=0)
    for p, v in stats.percentiles:
        n = int(round(bar_width * v / top)) if top else 0
        lines.append(f"{p:3d}\t{format_bytes(v):>14}  |{'*' * n}{' ' * (bar_width - n)}|")
    return "\n".join(lines)
