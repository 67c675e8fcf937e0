"""What every benchmark does at the end: say how and where it ran, write its results as JSON and say where,
keeping an earlier run's rows of the models it did not run again."""
import json
import platform
import sys
import time
from pathlib import Path
from typing import Any, Collection, Dict, List, Tuple, Union


def run_info() -> Dict[str, str]:
    """How and where a benchmark ran: its command line, machine, processor and date."""
    info = {"command": " ".join(["python"] + sys.argv), "machine": platform.platform(),
            "processor": platform.processor() or platform.machine(), "date": time.strftime("%Y-%m-%d")}
    torch = sys.modules.get("torch")  # only where the benchmark uses torch: the GPU it could use, if any
    if torch is not None:
        info["accelerator"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "none"
    return info


def write_json(path: Union[str, Path], payload: Dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (parent folders created) and print the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2))
    print(f"wrote {path}")


def earlier_results(path: Union[str, Path], rerun: Collection[str]) -> Tuple[Dict[str, Any], List[Dict[str, Any]]]:
    """The earlier result file at ``path`` (empty if there is none) and its rows of models not in ``rerun``;
    exits with a one-line error if the file is not a benchmark result file."""
    path = Path(path)
    if not path.is_file():
        return {}, []
    try:
        earlier = json.loads(path.read_text())
        return earlier, [r for r in earlier["results"] if r["model"] not in rerun]
    except (ValueError, KeyError, TypeError) as err:
        sys.exit(f"error: {path} is not a benchmark result file ({err}); move it away or pass another --json")
