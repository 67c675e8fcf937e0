"""What every benchmark does at the end: write its results as JSON and say where."""
import json
from pathlib import Path
from typing import Any, Dict, Union


def write_json(path: Union[str, Path], payload: Dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (parent folders created) and print the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")
