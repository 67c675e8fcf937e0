"""The README's zoo table: params, MAdds and peak RAM (both conventions, fp32 and int8) of every model."""
from __future__ import annotations

from typing import Callable, Dict, List, Optional

from ..models import create_model, list_models, model_info
from .profile import profile_model

ZOO_COLUMNS = ("model", "input", "params", "MAdds", "layer fp32 KiB", "layer int8 KiB", "tensor fp32 KiB", "tensor int8 KiB")


def zoo_rows(progress: Optional[Callable[[int, int, str], None]] = None) -> List[Dict[str, object]]:
    """One row per registered model at its default input shape (batch 1); ``progress(i, n, name)`` is called
    before each model is profiled."""
    rows = []
    names = list_models()
    for i, name in enumerate(names):
        if progress is not None:
            progress(i, len(names), name)
        model, shape = create_model(name), model_info(name).input_shape
        row: Dict[str, object] = {"model": name, "input": "x".join(map(str, shape))}
        for convention in ("layer", "tensor"):
            for dtype in ("fp32", "int8"):
                p = profile_model(model, shape, dtype, convention, name=name)
                row[f"{convention} {dtype} KiB"] = round(p.peak_bytes / 1024, 1)
        row["params"], row["MAdds"] = p.params, p.madds
        rows.append(row)
    return rows


def zoo_markdown(rows: List[Dict[str, object]]) -> str:
    """A Markdown table of :func:`zoo_rows`."""
    lines = ["| " + " | ".join(ZOO_COLUMNS) + " |", "|" + "---|" * len(ZOO_COLUMNS)]
    for row in rows:
        cells = [f"{row[c]:,}" if isinstance(row[c], int) else (f"{row[c]:,.1f}" if isinstance(row[c], float) else str(row[c])) for c in ZOO_COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
