"""Matplotlib figures as inline SVG strings, so the report needs no files and no network.

Agg is forced before pyplot is imported: the report runs on headless machines. Text stays
``<text>`` (``svg.fonttype = none``), which matplotlib XML-escapes; the XML prologue and
DOCTYPE are cut so the SVG can sit inside HTML.
"""
from __future__ import annotations

import io
import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

plt.rcParams.update({
    "svg.fonttype": "none", "svg.hashsalt": "llmpipe", "font.size": 9,
    "axes.spines.top": False, "axes.spines.right": False, "axes.grid": True, "grid.alpha": 0.3,
})


@dataclass(frozen=True)
class Series:
    """One line: its label and (x, y) points; points with a missing or non-finite y are dropped."""
    label: str
    x: list[float]
    y: list[float]


def finite_points(x: list, y: list) -> tuple[list[float], list[float]]:
    points = [(a, b) for a, b in zip(x, y)
              if isinstance(b, (int, float)) and not isinstance(b, bool) and math.isfinite(b)]
    return [a for a, _ in points], [b for _, b in points]


def to_svg(fig) -> str:
    """The figure as an SVG element (no prologue), closing the figure."""
    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    svg = buf.getvalue()
    return svg[svg.index("<svg"):]


def line_plot(series: list[Series], title: str, xlabel: str, ylabel: str) -> str | None:
    """Lines sharing one pair of axes; ``None`` when no series has a point to draw."""
    drawable = [(s.label, *finite_points(s.x, s.y)) for s in series]
    drawable = [d for d in drawable if d[1]]
    if not drawable:
        return None
    fig, ax = plt.subplots(figsize=(5.6, 3.0))
    for label, x, y in drawable:
        ax.plot(x, y, label=label, marker="o" if len(x) <= 20 else None, markersize=3, linewidth=1.4)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if len(drawable) > 1 or drawable[0][0]:
        ax.legend(frameon=False)
    return to_svg(fig)


def bar_plot(labels: list[str], groups: dict[str, list[float]], title: str, ylabel: str,
             logy: bool = False) -> str | None:
    """Grouped bars: one bar per (label, group); ``None`` without labels."""
    if not labels or not groups:
        return None
    fig, ax = plt.subplots(figsize=(max(5.6, 2.0 + 0.45 * len(labels)), 3.2))
    width = 0.8 / len(groups)
    for i, (name, values) in enumerate(groups.items()):
        xs = [j + (i - (len(groups) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, values, width=width, label=name)
    ax.set_xticks(range(len(labels)), labels, rotation=40 if len(labels) > 6 else 20, ha="right")
    if logy:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    if len(groups) > 1:
        ax.legend(frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    return to_svg(fig)
