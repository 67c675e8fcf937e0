"""A PNG of the RAM each layer holds, one line per model, layers named on the axis and each peak marked."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from .profile import Profile

MAX_NAMED_LAYERS = 60  # more than this and every n-th layer is named (the peak always is)


def memory_figure(profiles: Sequence[Profile]):
    """The matplotlib figure of :func:`plot_memory` (held RAM in KiB per layer, execution order)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = profiles[0]
    width = min(24.0, max(10.0, 0.22 * len(first.layers)))
    fig, ax = plt.subplots(figsize=(width, 6))
    for p in profiles:
        held = [l.held_bytes / 1024 for l in p.layers]
        line, = ax.plot(range(len(held)), held, marker=".", label=f"{p.model} (peak {p.peak_bytes / 1024:,.1f} KiB)")
        top = max(range(len(held)), key=held.__getitem__)
        ax.scatter([top], [held[top]], s=60, color=line.get_color(), zorder=3)
        ax.annotate(f"peak: {p.layers[top].name}", (top, held[top]), textcoords="offset points", xytext=(6, 8),
                    color=line.get_color(), fontsize=8)
    # layer names of the first model on the axis (every n-th where there are many, and its peak)
    step = max(1, -(-len(first.layers) // MAX_NAMED_LAYERS))
    top = max(range(len(first.layers)), key=lambda i: first.layers[i].held_bytes)
    ticks = sorted(set(range(0, len(first.layers), step)) | {top})
    ax.set_xticks(ticks, [first.layers[i].name for i in ticks], rotation=90, fontsize=7)
    ax.set_xlabel(f"layer / block of {first.model} (execution order)")
    ax.set_ylabel(f"held RAM (KiB, {first.dtype})")
    ax.set_title(f"Activation memory per layer, convention '{first.convention}'")
    ax.set_yscale("symlog", linthresh=1.0)  # log above 1 KiB, linear below: layers holding 0 B stay on the plot
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return fig


def plot_memory(profiles: Sequence[Profile], path: Union[str, Path]) -> None:
    """Held RAM (KiB) per layer in execution order, models overlaid, each model's peak layer marked and named."""
    import matplotlib.pyplot as plt

    fig = memory_figure(profiles)
    fig.savefig(path, dpi=120)
    plt.close(fig)
