"""C99 literals for generated code: identifiers, constant arrays and float constants."""
from __future__ import annotations

from typing import Dict

import numpy as np
from ..errors import InvalidInputError

C_TYPES: Dict[str, int] = {"int8_t": 1, "int16_t": 2, "int32_t": 4, "int64_t": 8}  # type -> bytes


def c_ident(name: str) -> str:
    """A C identifier from a tensor or layer name (anything but letters and digits becomes ``_``)."""
    ident = "".join(ch if ch.isalnum() else "_" for ch in name)
    return ident if ident and not ident[0].isdigit() else f"_{ident}"


def c_array(ctype: str, name: str, values: np.ndarray, per_line: int = 24) -> str:
    """``static const ctype name[n] = {...};`` holding ``values`` flattened (an empty array gets one 0)."""
    if ctype not in C_TYPES:
        raise InvalidInputError(f"unsupported C array type {ctype!r}; expected one of {', '.join(C_TYPES)}")
    flat = [int(v) for v in np.asarray(values).reshape(-1)]
    bits = 8 * C_TYPES[ctype]
    low, high = -(2 ** (bits - 1)), 2 ** (bits - 1) - 1
    bad = [v for v in flat if not low <= v <= high]
    if bad:
        raise InvalidInputError(f"{name}: value {bad[0]} does not fit {ctype}")
    if ctype == "int64_t":
        text = [f"INT64_C({v})" for v in flat]
    elif ctype == "int32_t":
        text = [str(v) if v != low else "INT32_MIN" for v in flat]
    else:
        text = [str(v) for v in flat]
    rows = [", ".join(text[i : i + per_line]) for i in range(0, len(text), per_line)]
    body = ",\n    ".join(rows) if rows else "0"
    align = " RT_ALIGNED" if C_TYPES[ctype] < 4 else ""  # kernels read int8/int16 arrays a word at a time
    return f"static const {ctype} {name}[{max(1, len(flat))}]{align} = {{\n    {body}\n}};\n"


def c_float(value: float) -> str:
    """A float literal that reads back as exactly ``float32(value)``."""
    f = float(np.float32(value))
    if not np.isfinite(f):
        raise InvalidInputError(f"cannot write {value!r} as a C float")
    return f"{f:.9e}f"


__all__ = ["C_TYPES", "c_array", "c_float", "c_ident"]
