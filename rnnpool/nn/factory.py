"""Choose a recurrent cell by name, like timm's ``get_act_layer``."""
from __future__ import annotations

import difflib
from typing import Any, Callable, Dict

from .fastgrnn import FastGRNNCell
from .gated import GRUCell, LSTMCell
from .recurrent import RecurrentCell
from ..errors import InvalidInputError

CELLS: Dict[str, Callable[..., RecurrentCell]] = {
    "fastgrnn": FastGRNNCell,
    "gru": GRUCell,
    "lstm": LSTMCell,
}


def create_cell(name: str, input_size: int, hidden_size: int, **kwargs: Any) -> RecurrentCell:
    """Build the cell called ``name`` ("fastgrnn", "gru" or "lstm"); ``kwargs`` go to its constructor."""
    if not isinstance(name, str) or name.lower() not in CELLS:
        close = difflib.get_close_matches(str(name).lower(), CELLS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise InvalidInputError(f"unknown cell {name!r}{hint}; expected one of {', '.join(CELLS)}")
    try:
        return CELLS[name.lower()](input_size, hidden_size, **kwargs)
    except TypeError as err:
        raise TypeError(f"bad options for cell {name!r}: {err}") from None
