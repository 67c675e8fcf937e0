"""A PNG of rnnpool fit's search: every candidate's peak RAM against its MAdds, the budget and the pick."""
from __future__ import annotations

from pathlib import Path
from typing import Union

from .search import FitReport, describe


def fit_figure(report: FitReport):
    """The matplotlib figure of :func:`plot_fit`: peak RAM (KiB, x) against MAdds (M, y), one point per candidate
    (filled where it fits), the original, the budget as a vertical line and the pick ringed and named."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 6))
    original = report.original
    ax.scatter([original["peak_bytes"] / 1024], [original["madds"] / 1e6], marker="s", s=70, color="black",
               label=f"original ({original['peak_bytes'] / 1024:,.1f} KiB)", zorder=3)
    for fits in (True, False):
        chosen = [c for c in report.candidates if c.fits == fits]
        if chosen:
            ax.scatter([c.peak_bytes / 1024 for c in chosen], [c.madds / 1e6 for c in chosen], s=40,
                       facecolors="tab:green" if fits else "none", edgecolors="tab:green" if fits else "tab:red",
                       label="candidates under the budget" if fits else "candidates over the budget", zorder=2)
    for c in report.candidates:
        ax.annotate(f"{c.replaced} {c.patch}/{c.stride} h{c.hidden_summary}", (c.peak_bytes / 1024, c.madds / 1e6),
                    textcoords="offset points", xytext=(5, 3), fontsize=7, color="dimgray")
    if report.chosen is not None:
        c = report.candidates[report.chosen]
        ax.scatter([c.peak_bytes / 1024], [c.madds / 1e6], s=220, facecolors="none", edgecolors="tab:blue", linewidths=2,
                   label=f"picked: {c.replaced} -> {describe(c)}", zorder=4)
    ax.axvline(report.ram_bytes / 1024, color="tab:red", linestyle="--", label=f"budget {report.ram_bytes / 1024:,.1f} KiB")
    ax.set_xscale("log")
    ax.set_xlabel(f"peak RAM (KiB, {report.dtype}, convention '{report.convention}')")
    ax.set_ylabel("MAdds (M)")
    ax.set_title(f"rnnpool fit {report.model} at {'x'.join(map(str, report.input))} (objective {report.objective})")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def plot_fit(report: FitReport, path: Union[str, Path]) -> None:
    """Write :func:`fit_figure` as a PNG."""
    import matplotlib.pyplot as plt

    fig = fit_figure(report)
    fig.savefig(path, dpi=120)
    plt.close(fig)


__all__ = ["fit_figure", "plot_fit"]
