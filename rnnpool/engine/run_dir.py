"""A run folder ``runs/<task>/<name>/``: config.yaml, metrics.csv (a row per epoch), weights/, curves.png."""
from __future__ import annotations

import contextlib
import csv
import os
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Union

import yaml


@contextlib.contextmanager
def atomic_write(path: Union[str, Path]) -> Iterator[Path]:
    """A temporary path beside ``path`` to write to; renamed over ``path`` when the block ends without
    error, so a killed process leaves the old file or the new one, never half of one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    yield tmp
    os.replace(tmp, path)


def new_run_dir(project: Union[str, Path], name: str, exist_ok: bool) -> Path:
    """``project/name``, or ``project/name2``, ``name3``... when it exists and ``exist_ok`` is False."""
    base = Path(project) / name
    path, i = base, 2
    while path.exists() and not exist_ok:
        path, i = Path(f"{base}{i}"), i + 1
    (path / "weights").mkdir(parents=True, exist_ok=True)
    return path


def run_dir_of(checkpoint: Union[str, Path]) -> Optional[Path]:
    """The run folder holding ``checkpoint`` (``<run>/weights/last.pt``), or None if it is not in one."""
    weights = Path(checkpoint).resolve().parent
    run = weights.parent
    return run if weights.name == "weights" and (run / "config.yaml").is_file() else None


def write_config(run: Path, config: Dict[str, Any]) -> None:
    with atomic_write(run / "config.yaml") as tmp:
        tmp.write_text(yaml.safe_dump(config, sort_keys=False))


def write_metrics(run: Path, rows: Sequence[Dict[str, Any]]) -> None:
    """Replace metrics.csv with ``rows`` (atomically, see :func:`atomic_write`)."""
    with atomic_write(run / "metrics.csv") as tmp, open(tmp, "w", newline="") as f:
        if rows:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)


def append_metrics(run: Path, row: Dict[str, Any]) -> None:
    write_metrics(run, read_metrics(run) + [row])


def read_metrics(run: Path) -> List[Dict[str, str]]:
    path = run / "metrics.csv"
    if not path.exists():
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def truncate_metrics(run: Path, epochs: int) -> None:
    """Keep the rows of the first ``epochs`` epochs (a resumed run rewrites what came after its checkpoint)."""
    write_metrics(run, [row for row in read_metrics(run) if int(row["epoch"]) <= epochs])


def plot_curves(run: Path, pairs: Sequence[Sequence[str]]) -> None:
    """``curves.png``: one panel per group of metrics.csv columns (e.g. [("train_loss", "val_loss"), ...])."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(run)
    if not rows:
        return
    fig, axes = plt.subplots(1, len(pairs), figsize=(5 * len(pairs), 3.5))
    for ax, keys in zip(axes if len(pairs) > 1 else [axes], pairs):
        for key in keys:
            ax.plot([int(r["epoch"]) for r in rows], [float(r[key]) for r in rows], marker="o", label=key)
        ax.set_xlabel("epoch")
        ax.legend()
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(run / "curves.png", dpi=100)
    plt.close(fig)
