"""The fused FastGRNN recurrence: one kernel call runs every step of every sequence of an RNNPool grid (a C
kernel on CPUs, here; Triton kernels on CUDA GPUs, in :mod:`rnnpool.nn.fused_triton`; :func:`backend` picks).

The eager path (:meth:`rnnpool.nn.recurrent.RecurrentCell.run_grid`) runs each recurrent step as a handful of
PyTorch ops over a batch of sequences, copying the strided grid into chunks first. The fused kernel
(``kernels/fastgrnn.c``) reads the grid where it lies (any strides), keeps each sequence's state in a small
local array, vectorises over the hidden units and threads over the sequences with OpenMP; its backward
runs from each step's saved pre-activation (the steps replayed from them, without U h). It serves FastGRNN
cells (every gate x update nonlinearity, low-rank or not, trainable zeta / nu) on CPU tensors of float32 and
float64.

How it is built: on first use, with the system C compiler (``$CC``, else ``cc``; ``-O3 -march=native
-fopenmp``) into ``$RNNPOOL_CACHE`` (default ``~/.cache/rnnpool``), keyed by the source, the compiler and the
CPU, and loaded with ctypes. It needs no PyTorch headers, so it builds in seconds against any installed torch.
Where it cannot be built (no compiler), a RuntimeWarning says why once and the eager path runs.

Without autograd, :func:`inference_ready`, :func:`project_input` and :func:`scans_into` let RNNPool2d run its whole
forward in three C calls that write where the next one reads (the input projection into its padded buffer, RNN1's
summaries through RNN2's W, RNN2's states into the output's channels). On GPUs :func:`scans_into` runs RNN2's four
sweeps in two Triton launches into the output's channels the same way; the cells' constants of an inference call
are made once per version of their parameters on both.

One switch: :func:`set_fused` (or ``RNNPOOL_FUSED=0`` in the environment) selects the eager path everywhere,
on CPUs and GPUs; :func:`use_fused` does so for a ``with`` block. The eager path also runs where no kernel
applies: other cells, other devices, other dtypes (on CPUs: autocast), TorchScript, ``torch.compile`` tracing
and ONNX export, and GPUs without Triton.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Iterator, List, Optional, Tuple

import torch
from torch.autograd.function import once_differentiable

KERNEL_DIR = Path(__file__).resolve().parent / "kernels"
SOURCES = ("fastgrnn.c", "fastgrnn_scan.h")
CFLAGS = ("-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-std=gnu99")
MAX_HIDDEN = 1024  # the kernel's limit (MAX_HIDDEN in fastgrnn.c)
ACTIVATIONS = {"sigmoid": 0, "tanh": 1, "quant_sigmoid": 2, "quant_tanh": 3, "relu": 4, "identity": 5}

_enabled = os.environ.get("RNNPOOL_FUSED", "1") != "0"
_library: Optional[ctypes.CDLL] = None
_failure: Optional[str] = None
_lock = threading.Lock()


def set_fused(enabled: bool) -> None:
    """Use the fused kernel where it applies (True, the default) or the eager PyTorch path everywhere."""
    global _enabled
    _enabled = bool(enabled)


def fused_enabled() -> bool:
    """Whether the switch selects the fused kernel (it may still be unavailable, see :func:`fused_available`)."""
    return _enabled


@contextlib.contextmanager
def use_fused(enabled: bool) -> Iterator[None]:
    """``with use_fused(False):`` runs the block on the eager path (and ``True`` on the fused kernel)."""
    before = _enabled
    set_fused(enabled)
    try:
        yield
    finally:
        set_fused(before)


def _cache_dir() -> Path:
    root = os.environ.get("RNNPOOL_CACHE") or os.path.join(os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"),
                                                           "rnnpool")
    return Path(root) / "kernels"


def _cpu_signature() -> str:
    """What -march=native depends on: the CPU model and flags (Linux), else the platform."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
        return "\n".join(sorted({l for l in lines if l.startswith(("flags", "model name", "Features", "CPU part"))}))
    except OSError:
        return platform.processor() + platform.machine()


def _build(compiler: str, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        done = subprocess.run([compiler, *CFLAGS, "-o", str(built), str(KERNEL_DIR / SOURCES[0]), "-lm"],
                              capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise RuntimeError(f"{compiler} failed: {done.stderr.strip()[-2000:]}")
        os.replace(built, target)  # atomic: concurrent processes (DDP ranks) each build, the last one wins


def _declare(lib: ctypes.CDLL) -> None:
    for suffix, args in (("f32", _ScanArgs32), ("f64", _ScanArgs64)):
        width = getattr(lib, f"fastgrnn_width_{suffix}")
        width.argtypes, width.restype = [ctypes.c_int], ctypes.c_int
        forward = getattr(lib, f"fastgrnn_forward_{suffix}")
        forward.argtypes = [ctypes.POINTER(args), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_int]
        forward.restype = ctypes.c_int
        backward = getattr(lib, f"fastgrnn_backward_{suffix}")
        backward.argtypes = [ctypes.POINTER(args), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                             ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int]
        backward.restype = ctypes.c_int
        scatter = getattr(lib, f"fastgrnn_scatter_{suffix}")
        scatter.argtypes = [ctypes.POINTER(args), ctypes.c_int, ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
        scatter.restype = ctypes.c_int
        infer = getattr(lib, f"fastgrnn_infer_{suffix}")
        infer.argtypes = [ctypes.POINTER(args), ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Epilogue),
                          ctypes.c_void_p, ctypes.c_int]
        infer.restype = ctypes.c_int
    project = lib.rnnpool_project_f32
    project.argtypes = [ctypes.c_void_p, *[ctypes.c_int64] * 4, ctypes.c_void_p, ctypes.c_int64, ctypes.c_void_p,
                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int]
    project.restype = ctypes.c_int


def load_library() -> Optional[ctypes.CDLL]:
    """The compiled kernel, built on first use (None where it cannot be built; the reason is in the warning)."""
    global _library, _failure
    if _library is not None or _failure is not None:
        return _library
    with _lock:
        if _library is not None or _failure is not None:
            return _library
        compiler = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
        try:
            if not compiler:
                raise RuntimeError("no C compiler found (set CC, or install gcc)")
            digest = hashlib.sha256()
            for name in SOURCES:
                digest.update((KERNEL_DIR / name).read_bytes())
            version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
            digest.update("\0".join([version, " ".join(CFLAGS), _cpu_signature()]).encode())
            target = _cache_dir() / f"fastgrnn-{digest.hexdigest()[:20]}.so"
            if not target.exists():
                _build(compiler, target)
            library = ctypes.CDLL(str(target))
            _declare(library)
            _library = library
        except Exception as err:  # no compiler, no OpenMP, read-only cache, odd platform: the eager path runs
            _failure = f"{type(err).__name__}: {err}"
            warnings.warn(f"rnnpool: the fused FastGRNN kernel could not be built ({_failure}); RNNPool runs its "
                          "eager PyTorch path", RuntimeWarning, stacklevel=3)
    return _library


def fused_available() -> bool:
    """Whether the fused kernel is (or can be) built and loaded on this machine."""
    return load_library() is not None


def _fields(real) -> List:
    return [("wx", ctypes.c_void_p), ("T", ctypes.c_int64), ("N", ctypes.c_int64), ("L", ctypes.c_int64), ("M", ctypes.c_int64),
            ("st", ctypes.c_int64), ("sn", ctypes.c_int64), ("sl", ctypes.c_int64), ("sm", ctypes.c_int64), ("sg", ctypes.c_int64),
            ("width", ctypes.c_int64), ("offset", ctypes.c_void_p), ("u", ctypes.c_void_p), ("ut", ctypes.c_void_p), ("bias_diff", ctypes.c_void_p),
            ("zeta", real), ("nu", real)]


class _ScanArgs32(ctypes.Structure):
    _fields_ = _fields(ctypes.c_float)


class _ScanArgs64(ctypes.Structure):
    _fields_ = _fields(ctypes.c_double)


class _Epilogue(ctypes.Structure):
    """Where an inference scan writes (epilogue_f32/f64 in the kernel; the same layout for both types)."""
    _fields_ = [("out", ctypes.c_void_p), ("on", ctypes.c_int64), ("ol", ctypes.c_int64), ("om", ctypes.c_int64),
                ("oo", ctypes.c_int64), ("proj", ctypes.c_void_p), ("O", ctypes.c_int64), ("ps", ctypes.c_int64)]


def _padded(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """``tensor`` (..., H) zero-padded to (..., width), contiguous (the kernel reads whole vectors)."""
    return torch.nn.functional.pad(tensor, (0, width - tensor.shape[-1])).contiguous()


def _arguments(base: torch.Tensor, geometry, offset: torch.Tensor, u: torch.Tensor, ut: torch.Tensor, bias_diff: torch.Tensor,
               zeta: float, nu: float):
    """The kernel's argument struct for the grid ``geometry`` = (size (T, N, L, M, H), strides, start) over the
    contiguous ``base`` (strides may be negative: a grid read backwards in time), and the cell constants
    padded to the kernel's width (contiguous, kept alive by the caller)."""
    size, stride, start = geometry
    args = (_ScanArgs32 if base.dtype == torch.float32 else _ScanArgs64)()
    args.wx = base.data_ptr() + start * base.element_size()
    args.T, args.N, args.L, args.M = size[:4]
    args.st, args.sn, args.sl, args.sm, args.sg = stride
    args.width = offset.shape[0]
    args.offset, args.u, args.ut, args.bias_diff = offset.data_ptr(), u.data_ptr(), ut.data_ptr(), bias_diff.data_ptr()
    args.zeta, args.nu = zeta, nu
    return args


def _suffix(dtype: torch.dtype) -> str:
    return "f32" if dtype == torch.float32 else "f64"


def scan_forward(base: torch.Tensor, geometry, zeta: torch.Tensor, nu: torch.Tensor, gate: int, update: int, kernel_constants,
                 save_steps: bool):
    """The C kernel's forward over the grid ``geometry`` of ``base`` (see :class:`FastGRNNScan`): final states
    (S, H) and, with ``save_steps``, every step's pre-activation (S, T, H) for the backward (else None)."""
    lib = load_library()
    t, n, l, m, h = geometry[0]
    sequences = n * l * m
    offset, u, ut, bias_diff = kernel_constants
    out = base.new_empty(sequences, h)
    saved = base.new_empty(sequences, t, h) if save_steps else None
    if sequences:
        args = _arguments(base, geometry, offset, u, ut, bias_diff, float(zeta), float(nu))
        status = getattr(lib, f"fastgrnn_forward_{_suffix(base.dtype)}")(
            ctypes.byref(args), h, gate, update, out.data_ptr(), saved.data_ptr() if save_steps else None, torch.get_num_threads())
        if status:
            raise RuntimeError(f"fused FastGRNN forward failed (status {status}, hidden {h})")
    return out, saved


class FastGRNNScan(torch.autograd.Function):
    """Final states (N*L*M, H) of FastGRNN over a grid of ``W x`` (T, N, L, M, H), offset not added.

    The grid is given as the strided view ``geometry`` = (size, stride, start) of the contiguous tensor
    ``base`` (start: elements from base's first one; windows may overlap), so the backward adds each step's
    gradient straight into a gradient of ``base`` (the autograd of overlapping views, unfold_backward, costs
    more than the recurrence). The forward keeps every step's pre-activation ``x + U h``, so the backward needs
    no U h: it replays the steps from them (gate, candidate, state) and then runs back through them."""

    @staticmethod
    def forward(ctx, base: torch.Tensor, geometry, offset: torch.Tensor, u: torch.Tensor, bias_diff: torch.Tensor,
                zeta: torch.Tensor, nu: torch.Tensor, gate: int, update: int, kernel_constants) -> torch.Tensor:
        train = any(ctx.needs_input_grad)
        out, saved = scan_forward(base, geometry, zeta, nu, gate, update, kernel_constants, train)
        if train:
            ctx.save_for_backward(base, *kernel_constants, zeta, nu, saved)
            ctx.geometry, ctx.kinds = geometry, (gate, update)
        return out

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        base, offset, u, ut, bias_diff, zeta, nu, saved = ctx.saved_tensors
        (size, stride, start), (gate, update) = ctx.geometry, ctx.kinds
        t, n, l, m, h = size
        width = offset.shape[0]
        sequences = n * l * m
        threads = torch.get_num_threads()
        lib, suffix = load_library(), _suffix(base.dtype)
        grad_out = grad_out.contiguous()  # (held here: the kernel reads it through a raw pointer)
        grad_wx = base.new_empty(t, sequences, h)
        parts = base.new_zeros(threads, h * width + 2 * width + 2)
        needs = ctx.needs_input_grad
        grad_base = None
        if sequences:
            args = _arguments(base, ctx.geometry, offset, u, ut, bias_diff, float(zeta), float(nu))
            status = getattr(lib, f"fastgrnn_backward_{suffix}")(
                ctypes.byref(args), h, gate, update, saved.data_ptr(), grad_out.data_ptr(), grad_wx.data_ptr(), parts.data_ptr(),
                threads)
            if status:
                raise (MemoryError if status == 2 else RuntimeError)(
                    f"fused FastGRNN backward failed (status {status}{': no memory for its scratch' if status == 2 else ''}, hidden {h})")
        if needs[0]:
            if start == 0 and tuple(stride) == contiguous_strides(size) and base.numel() == grad_wx.numel():
                grad_base = grad_wx.view(base.shape)  # the grid is the whole base, in its order
            else:
                grad_base = torch.zeros_like(base, memory_format=torch.contiguous_format)
                if sequences:
                    args = _arguments(grad_base, ctx.geometry, offset, u, ut, bias_diff, 0.0, 0.0)
                    reach = sum((d - 1) * abs(s) for d, s in zip(size, stride)) - (n - 1) * abs(stride[1])  # one image's extent
                    by_image = stride[1] > reach
                    getattr(lib, f"fastgrnn_scatter_{suffix}")(ctypes.byref(args), h, grad_wx.data_ptr(), int(by_image), threads)
        total = parts.sum(0)
        return (grad_base, None,
                total[h * width + width: h * width + width + h] if needs[2] else None,
                total[: h * width].view(h, width)[:, :h] if needs[3] else None,
                total[h * width: h * width + h] if needs[4] else None,
                total[-2].reshape(zeta.shape) if needs[5] else None,
                total[-1].reshape(nu.shape) if needs[6] else None,
                None, None, None)


def kernel_constants(offset: torch.Tensor, u: torch.Tensor, bias_diff: torch.Tensor):
    """The cell's constants as the kernel reads them: detached, zero-padded to its vector width, contiguous
    (made once per cell and call, shared by its grids and directions; held while the kernel reads them)."""
    width = getattr(load_library(), f"fastgrnn_width_{_suffix(u.dtype)}")(u.shape[0])
    return tuple(_padded(v.detach(), width) for v in (offset, u, u.t(), bias_diff))


def contiguous_strides(size) -> tuple:
    strides, step = [], 1
    for d in reversed(size):
        strides.append(step)
        step *= d
    return tuple(reversed(strides))


# Which kernel serves parameters on each device type: the C kernel on CPUs, the Triton kernels of
# rnnpool.nn.fused_triton on CUDA GPUs (the tests also route CPU tensors through Triton's interpreter).
BACKENDS = {"cpu": "c", "cuda": "triton"}
HALF_DTYPES = (torch.float16, torch.bfloat16)  # grids the Triton kernels read in the parameters' precision (autocast)


def triton_available() -> bool:
    """Whether the Triton kernels can be used (Triton is installed; they compile on first launch)."""
    global _triton_failure
    if _triton_failure is None:
        try:
            from . import fused_triton  # noqa: F401  (imports triton)
            _triton_failure = ""
        except Exception as err:  # not installed, or an incompatible version: the eager path runs on GPUs
            _triton_failure = f"{type(err).__name__}: {err}"
            warnings.warn(f"rnnpool: the fused FastGRNN kernels for GPUs need Triton ({_triton_failure}); RNNPool runs "
                          "its eager PyTorch path there", RuntimeWarning, stacklevel=3)
    return not _triton_failure


_triton_failure: Optional[str] = None  # None: not tried yet; "": imported


def backend(cell: torch.nn.Module, grids: List[torch.Tensor]) -> Optional[str]:
    """The fused kernel that runs ``cell`` (a FastGRNNCell) over ``grids`` ("c" or "triton"), or None where none
    applies: switched off, TorchScript, torch.compile or ONNX export tracing, parameters other than float32/64,
    grids on another device or of another dtype (the Triton kernels also read float16/bfloat16 grids), or the
    kernel cannot be built."""
    kind = _parameters_kind(cell)
    if kind is None:
        return None
    dtype, device = cell.u1.dtype, cell.u1.device
    readable = (dtype, *HALF_DTYPES) if kind == "triton" else (dtype,)
    if any(g.device != device or g.dtype not in readable or g.dim() != 5 for g in grids):
        return None
    if kind == "c":
        return kind if fused_available() else None
    return kind if triton_available() else None


def _parameters_kind(cell: torch.nn.Module) -> Optional[str]:
    """The kernel for ``cell``'s parameters, whatever the grids (see :func:`backend`; None where none applies)."""
    if not _enabled or torch.jit.is_scripting() or cell.hidden_size > MAX_HIDDEN:
        return None
    if torch.compiler.is_compiling() or torch.onnx.is_in_onnx_export():
        return None
    if cell.u1.dtype not in (torch.float32, torch.float64):
        return None
    return BACKENDS.get(cell.u1.device.type)


def _grid_view(grid: torch.Tensor):
    """(base, (size, stride, start)): ``grid`` as a strided view of a contiguous tensor, its own base where it is
    a view of one (RNNPool's projection), else itself (made contiguous first if it is neither)."""
    base = grid._base if grid._base is not None else grid
    if not base.is_contiguous() or any(s < 0 for s in grid.stride()):
        grid = base = grid.contiguous()
    return base, (tuple(grid.shape), tuple(grid.stride()), grid.storage_offset() - base.storage_offset())


def fastgrnn_scan(cell: torch.nn.Module, grids: List[torch.Tensor], both_directions: bool = False,
                  kind: Optional[str] = None) -> Optional[List[torch.Tensor]]:
    """Final hidden states (N*L*M, H) of ``cell`` over each grid of ``W x`` (T, N, L, M, H), offset not yet added;
    with ``both_directions`` also over each grid reversed in time: [grid 0, grid 0 reversed, grid 1, ...].

    ``kind``: the kernel to run, as :func:`backend` chose it (default: ask it), which reads each grid where it
    lies (see :func:`_grid_view`). None where the Triton kernels fail to compile (said once; the caller runs the
    eager path)."""
    kind = kind or backend(cell, grids)
    kinds = ACTIVATIONS[cell.gate_nonlinearity], ACTIVATIONS[cell.update_nonlinearity]
    # without autograd, no Function (under no_grad it would still see parameters that need gradients and save
    # every step's state), and the constants of the cell's last inference call (outside autocast)
    grad = torch.is_grad_enabled()
    if kind == "triton":
        if grad or torch.is_autocast_enabled(cell.u1.device.type):  # (autocast may make a low-rank U half)
            offset, u, bias_diff, zeta, nu = _cell_constants(cell)
            return _triton_scans(grids, (offset, u.to(offset.dtype), bias_diff, zeta, nu), None, kinds, both_directions)
        return _triton_scans(grids, None, _inference_constants(cell, "triton"), kinds, both_directions)
    if not grad:
        zeta, nu, constants = _inference_constants(cell)[:3]
    else:
        offset, u, bias_diff, zeta, nu = _cell_constants(cell)
        constants = kernel_constants(offset, u, bias_diff)
    out = []
    for grid in grids:
        base, geometry = _grid_view(grid)
        for view in (geometry, _reversed(geometry)) if both_directions else (geometry,):
            if grad:
                out.append(FastGRNNScan.apply(base, view, offset, u, bias_diff, zeta, nu, *kinds, constants))
            else:
                out.append(scan_forward(base, view, zeta, nu, *kinds, constants, False)[0])
    return out


def _cell_constants(cell: torch.nn.Module):
    """What the kernels read of a FastGRNN cell: offset (b_z), U, b_h - b_z, sigmoid(zeta), sigmoid(nu)."""
    return (cell.input_offset(), cell.recurrent_weight(), cell.bias_update - cell.bias_gate, torch.sigmoid(cell.zeta),
            torch.sigmoid(cell.nu))


def _reversed(geometry):
    """The grid ``geometry`` read backwards in time: it starts at the last step."""
    size, stride, start = geometry
    return size, (-stride[0], *stride[1:]), start + (size[0] - 1) * stride[0]


# Per cell: its parameters with their versions and storage when its kernel constants were made, and those
# constants. An inference call reuses them while every parameter is the same tensor at the same version and
# address (an optimizer step, load_state_dict, .to(), ``p.data = ...`` or replacing a parameter makes new
# ones): at batch 1 the dozen small ops that make them cost about a tenth of a small layer's forward.
_CONSTANTS: "weakref.WeakKeyDictionary[torch.nn.Module, tuple]" = weakref.WeakKeyDictionary()


def _inference_constants(cell: torch.nn.Module, kind: str = "c"):
    """What an inference call of ``kind``'s kernel reads of ``cell``, made once per version of its parameters: for
    the C kernel (zeta, nu, kernel constants, W transposed), for Triton its constants (offset, U, bias_diff, zeta,
    nu; see :func:`rnnpool.nn.fused_triton.kernel_constants`)."""
    # (a cell's own parameters, read directly: Module.parameters() costs more than the rest of this check)
    params = tuple(p for p in cell._parameters.values() if p is not None) if not cell._modules else tuple(cell.parameters())
    versions = tuple((p._version, p.data_ptr()) for p in params)  # (data_ptr: ``p.data = ...`` keeps the version)
    cached = _CONSTANTS.get(cell)
    if cached is not None and cached[2] == kind and len(cached[0]) == len(params) \
            and all(a is b for a, b in zip(cached[0], params)) and cached[1] == versions:
        return cached[3]
    with torch.no_grad():
        offset, u, bias_diff, zeta, nu = _cell_constants(cell)
        if kind == "triton":
            from . import fused_triton
            value = fused_triton.kernel_constants(offset, u.to(offset.dtype), bias_diff, zeta, nu)
        else:
            w = cell.input_weight()
            # W transposed, (input, G) with G padded to whole vectors: the input projection's and the epilogue's matrix
            wt = torch.nn.functional.pad(w.t(), (0, -w.shape[0] % 8)).contiguous()
            value = (float(zeta), float(nu), kernel_constants(offset, u, bias_diff), wt)
    _CONSTANTS[cell] = (params, versions, kind, value)
    return value


# Input projections the C kernel makes at inference (rnnpool_project_f32) rather than a BLAS product and a
# padding copy: float32, a contiguous NCHW map and at most PROJECT_MAX_OUTPUTS projected features.
PROJECT_MAX_OUTPUTS = 64


def inference_ready(cells, x: torch.Tensor, kind: str = "c") -> bool:
    """Whether an RNNPool of ``cells`` can run its inference on ``x`` through ``kind``'s kernel: on CPUs ("c")
    through :func:`project_input` and :func:`scans_into`, on GPUs ("triton") with RNN2 through :func:`scans_into`.
    That kernel applies to every cell (FastGRNN, not compiled, and what :func:`backend` asks: the switch on, the
    device, float32/64 parameters and input alike), autograd is off, and so is autocast on GPUs."""
    from .fastgrnn import FastGRNNCell  # (that module imports this one)

    if torch.is_grad_enabled() or torch.jit.is_scripting():
        return False
    for cell in cells:
        if not isinstance(cell, FastGRNNCell) or cell.compiled or _parameters_kind(cell) != kind:
            return False
        if cell.u1.dtype != x.dtype or cell.u1.device != x.device:
            return False
    if kind == "triton":
        return not torch.is_autocast_enabled(x.device.type) and triton_available()
    return fused_available()


def project_input(cell: torch.nn.Module, x: torch.Tensor, pad_rows: int, pad_cols: int) -> Optional[torch.Tensor]:
    """``W x`` of every pixel of ``x`` (N, C, H, W) for ``cell``, channels-last and zero-padded: (N, H + 2 pad_rows,
    W + 2 pad_cols, G), in one C pass; None where that does not apply (see PROJECT_MAX_OUTPUTS: the caller's matmul
    and padding copy then make it)."""
    n, c, h, w = x.shape
    g = cell.num_gates * cell.hidden_size
    if x.dtype != torch.float32 or not x.is_contiguous() or g > PROJECT_MAX_OUTPUTS:
        return None
    wt = _inference_constants(cell)[3]
    out = x.new_empty(n, h + 2 * pad_rows, w + 2 * pad_cols, g)
    status = load_library().rnnpool_project_f32(x.data_ptr(), n, c, h, w, wt.data_ptr(), g, out.data_ptr(), pad_rows,
                                                pad_cols, torch.get_num_threads())
    if status:
        raise RuntimeError(f"RNNPool input projection failed (status {status}, {g} outputs)")
    return out


def scan_into(cell: torch.nn.Module, grid: torch.Tensor, dest: torch.Tensor, reverse: bool = False,
              project: Optional[torch.nn.Module] = None) -> bool:
    """Inference of ``cell`` over the grid of ``W x`` (T, N, L, M, H) (read backwards in time with ``reverse``) in
    the C kernel, writing each sequence's final state, or with ``project`` that cell's input projection of it,
    into ``dest`` (N, L, M, H or G), any strides (e.g. a channel slice of an NCHW output); on a GPU the Triton
    kernel instead, as :func:`scans_into` says (whose result it returns)."""
    return scans_into(cell, [(grid, dest, reverse)], project)


def scans_into(cell: torch.nn.Module, scans: List[Tuple[torch.Tensor, torch.Tensor, bool]],
               project: Optional[torch.nn.Module] = None) -> bool:
    """:func:`scan_into` for several (grid, dest, reverse) of one cell in one kernel call (one parallel region, the
    cells' constants looked up once: at batch 1 a call's overhead is a good part of a small layer's time).

    On a GPU (the cell's parameters on CUDA, see :func:`inference_ready`) the Triton kernel runs them instead, a
    grid read forward and then reversed into two views of one tensor in one launch (no ``project`` there). True,
    or False where those kernels fail to compile (said once; the caller runs the eager path)."""
    if BACKENDS.get(cell.u1.device.type) == "triton":  # (a dict lookup: this runs in every C inference call too)
        if project is not None:
            raise ValueError("scans_into: the Triton kernels take no project cell (project RNN2's input with W2 first)")
        return _triton_scans_into(cell, scans)
    zeta, nu, constants, _ = _inference_constants(cell)
    wt = _inference_constants(project)[3] if project is not None else None
    h = cell.hidden_size
    features = project.num_gates * project.hidden_size if project is not None else h
    count = len(scans)
    args = ((_ScanArgs32 if constants[0].dtype == torch.float32 else _ScanArgs64) * count)()
    epilogues = (_Epilogue * count)()
    sequences = 0  # of the largest scan: the scans share the kernel's scratch one after the other
    bases = []  # (held here: where a grid is not a view of a contiguous tensor, _grid_view makes a copy)
    for index, (grid, dest, reverse) in enumerate(scans):
        _check_destination(grid, dest, features, grid.dtype)
        t, n, l, m, _ = grid.shape
        base, geometry = _grid_view(grid)
        bases.append(base)
        args[index] = _arguments(base, _reversed(geometry) if reverse else geometry, *constants, zeta, nu)
        epilogues[index] = _Epilogue(dest.data_ptr(), *dest.stride(), wt.data_ptr() if wt is not None else None, features,
                                     wt.shape[1] if wt is not None else 0)
        sequences = max(sequences, n * l * m)
    finals = constants[0].new_empty(sequences, h)  # scratch: the final states before the epilogue
    kinds = ACTIVATIONS[cell.gate_nonlinearity], ACTIVATIONS[cell.update_nonlinearity]
    status = getattr(load_library(), f"fastgrnn_infer_{_suffix(finals.dtype)}")(
        args, count, h, *kinds, epilogues, finals.data_ptr(), torch.get_num_threads())
    if status:
        raise RuntimeError(f"fused FastGRNN inference failed (status {status}, hidden {h})")
    return True


def _check_destination(grid: torch.Tensor, dest: torch.Tensor, features: int, dtype: torch.dtype) -> None:
    """A scan's destination must be (N, L, M, features) of the grid (T, N, L, M, G), of ``dtype``, on its device."""
    n, l, m = grid.shape[1:4]
    if tuple(dest.shape) != (n, l, m, features) or dest.dtype != dtype or dest.device != grid.device:
        raise ValueError(f"scans_into: destination {tuple(dest.shape)} {dest.dtype} does not fit the grid's "
                         f"{(n, l, m, features)} {dtype}")


def _triton_scans_into(cell: torch.nn.Module, scans: List[Tuple[torch.Tensor, torch.Tensor, bool]]) -> bool:
    """:func:`scans_into` on a GPU: a launch per grid, or per grid read both ways into two views of one tensor."""
    from . import fused_triton
    constants = _inference_constants(cell, "triton")
    kinds = ACTIVATIONS[cell.gate_nonlinearity], ACTIVATIONS[cell.update_nonlinearity]
    for grid, dest, _ in scans:
        _check_destination(grid, dest, cell.hidden_size, constants[0].dtype)
    try:
        index = 0
        while index < len(scans):
            grid, dest, reverse = scans[index]
            base, geometry = _grid_view(grid)
            pair = scans[index + 1] if index + 1 < len(scans) else None
            if (not reverse and pair is not None and pair[0] is grid and pair[2] and pair[1].stride() == dest.stride()
                    and pair[1].untyped_storage().data_ptr() == dest.untyped_storage().data_ptr()):
                fused_triton.scan_forward(base, geometry, constants, *kinds, 2, False, dest, pair[1])
                index += 2
            else:
                fused_triton.scan_forward(base, _reversed(geometry) if reverse else geometry, constants, *kinds, 1, False, dest)
                index += 1
    except torch.OutOfMemoryError:
        raise
    except Exception as err:
        _triton_failed(err)
        return False
    return True


def _triton_scans(grids, tensors, constants, kinds, both_directions: bool) -> Optional[List[torch.Tensor]]:
    """The Triton kernels over ``grids``: through their autograd Function with ``tensors`` (offset, U, bias_diff,
    zeta, nu as the cell computes them; ``constants`` made of them here), or, with None, the forward kernel alone
    on ``constants`` (inference)."""
    from . import fused_triton
    out: List[torch.Tensor] = []
    if tensors is not None:  # once for all grids and directions
        constants = fused_triton.kernel_constants(*tensors)
    try:
        for grid in grids:
            base, geometry = _grid_view(grid)
            if tensors is None:
                final = fused_triton.scan_forward(base, geometry, constants, *kinds, 2 if both_directions else 1, False)[0]
                out.extend(final.chunk(2, 0) if both_directions else [final])
            else:
                out.extend(fused_triton.triton_scan(base, geometry, *tensors, *kinds, both_directions, constants))
    except torch.OutOfMemoryError:
        raise
    except Exception as err:
        _triton_failed(err)
        return None
    return out


def _triton_failed(err: Exception) -> None:
    """A GPU or toolchain Triton cannot compile for: say so once; the eager path runs from now on."""
    global _triton_failure
    _triton_failure = f"{type(err).__name__}: {str(err)[:500]}"
    warnings.warn(f"rnnpool: the fused FastGRNN kernels for GPUs failed ({_triton_failure}); RNNPool runs its eager "
                  "PyTorch path there", RuntimeWarning, stacklevel=5)


__all__ = ["BACKENDS", "FastGRNNScan", "backend", "fastgrnn_scan", "fused_available", "fused_enabled", "inference_ready",
           "kernel_constants", "load_library", "project_input", "scan_forward", "scan_into", "scans_into", "set_fused", "triton_available",
           "use_fused"]
