"""What every benchmark does at the end: say how and where it ran, write its results as JSON and say where,
keeping an earlier run's rows of the models it did not run again; ``merge`` joins the result files of jobs run
side by side (``python benchmarks/_report.py merge OUTPUT INPUT...``)."""
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


ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"


def portable_paths(value: Any) -> Any:
    """``value`` with every absolute path inside this repository made relative to it, and every one inside the
    shared data folder written as ``../shared/...``, so a committed result names files the way a reader can find
    them (nested dicts and lists included; other strings, such as temporary folders, unchanged)."""
    if isinstance(value, dict):
        return {k: portable_paths(v) for k, v in value.items()}
    if isinstance(value, list):
        return [portable_paths(v) for v in value]
    if isinstance(value, str) and value.startswith("/"):
        path = Path(value)
        for base, prefix in ((ROOT, Path()), (SHARED, Path("..") / "shared")):
            try:
                return str(prefix / path.relative_to(base))
            except ValueError:
                continue
    return value


def write_json(path: Union[str, Path], payload: Dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` (parent folders created; paths made portable, see :func:`portable_paths`) and
    print the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(portable_paths(payload), indent=2))
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


def merge_results(output: Union[str, Path], inputs: List[Union[str, Path]]) -> None:
    """Write the rows of ``inputs`` (result files of jobs run side by side) into ``output``, after those it
    already holds; a later row of a model replaces an earlier one in its place. Other keys come from the last input."""
    payload: Dict[str, Any] = {}
    rows: Dict[str, Dict[str, Any]] = {}
    for path in [output, *inputs]:
        earlier, kept = earlier_results(path, set())
        for row in kept:
            rows[row["model"]] = row
        if path != output:
            payload.update({k: v for k, v in earlier.items() if k != "results"})
    write_json(output, {**payload, "results": list(rows.values())})


if __name__ == "__main__":  # python benchmarks/_report.py merge OUTPUT INPUT...
    if len(sys.argv) < 4 or sys.argv[1] != "merge":
        sys.exit("usage: python benchmarks/_report.py merge OUTPUT INPUT... (rows of INPUTs added to OUTPUT)")
    for name in sys.argv[3:]:
        if not Path(name).is_file():
            sys.exit(f"error: result file {name} does not exist")
    merge_results(sys.argv[2], sys.argv[3:])
