"""A PNG of the RAM each layer holds, one line per model."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from .profile import Profile


def plot_memory(profiles: Sequence[Profile], path: Union[str, Path]) -> None:
    """Held RAM (KiB) per layer in execution order, models overlaid; the peak of each marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 4.5))
    for p in profiles:
        held = [l.held_bytes / 1024 for l in p.layers]
        ax.plot(range(len(held)), held, label=f"{p.model} (peak {p.peak_bytes / 1024:,.0f} KiB)")
        top = max(range(len(held)), key=held.__getitem__)
        ax.scatter([top], [held[top]], marker="o")
    ax.set_xlabel("layer / block (execution order)")
    ax.set_ylabel(f"held RAM (KiB, {profiles[0].dtype})")
    ax.set_title(f"Activation memory per layer, convention '{profiles[0].convention}'")
    ax.set_yscale("log")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
