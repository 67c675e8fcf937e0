import os
import subprocess
import sys

import pytest
import torch

from rnnpool.engine import ClassifyConfig
from rnnpool.engine import loop


def test_deterministic_selects_deterministic_cuda_kernels(monkeypatch):
    """--deterministic on a CUDA device: deterministic cuDNN, no autotuning, deterministic algorithms (warn only)."""
    real_resolve = loop.resolve_device
    monkeypatch.setattr(loop, "resolve_device", lambda name: torch.device("cuda"))
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", False)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda *a, **k: calls.append((a, k)))
    assert loop.setup_device("cuda", deterministic=True) == (torch.device("cuda"), False)
    assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    assert calls == [((True,), {"warn_only": True})] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"
    calls.clear()
    monkeypatch.setattr(loop, "resolve_device", real_resolve)
    loop.setup_device("cpu", deterministic=True)  # CPU runs are deterministic already: nothing changes
    assert calls == []


@pytest.mark.parametrize("change,message", [
    ({"model": "mobilenet_v2"}, "unknown model 'mobilenet_v2'; did you mean 'mobilenetv2'"),
    ({"epochs": 0}, "epochs must be positive, got 0"),
    ({"batch_size": -4}, "batch_size must be positive, got -4"),
    ({"lr": 0.0}, "need lr > 0"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1"),
])
def test_bad_settings_are_refused_before_any_work(change, message):
    with pytest.raises((KeyError, ValueError), match=message):
        ClassifyConfig(**{"model": "mobilenetv2", "data": "unused", **change})


def test_time_limit_stops_before_an_epoch_that_would_not_fit(monkeypatch):
    """Another epoch as long as the mean so far must fit: with 10 s epochs and a 35 s limit the run stops after
    the 3rd (30 s + 10 s > 35 s), not after the 2nd (20 s + 10 s fit); without a limit it never stops."""
    clock = [0.0]
    monkeypatch.setattr(loop.time, "monotonic", lambda: clock[0])
    limit = loop.TimeLimit(35 / 60, torch.device("cpu"))
    decisions = []
    for epoch in range(4):
        clock[0] += 10
        decisions.append(limit.stop_after_this_epoch(epoch, 10))
    assert decisions == [False, False, True, True]  # after epoch 3 (30 s): a 4th would end at 40 s
    clock[0] += 10
    assert not limit.stop_after_this_epoch(4, 5)  # the run's last epoch: nothing left to cut
    never = loop.TimeLimit(0, torch.device("cpu"))
    clock[0] += 1e6
    assert not never.stop_after_this_epoch(0, 10)
    with pytest.raises(ValueError, match="time_limit=-1"):
        ClassifyConfig(model="mobilenetv2", data="unused", time_limit=-1)


@pytest.mark.parametrize("env, hidden", [({}, False), ({"TQDM_DISABLE": "1"}, True)])
def test_progress_bars_follow_tqdm_settings(env, hidden):
    """TQDM_DISABLE=1 turns the training and evaluation bars off (tqdm reads it when it is imported, so a fresh
    process); other processes than the main one never show one."""
    code = "from rnnpool.engine.loop import progress; print(progress(range(3)).disable)"
    environ = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")}
    out = subprocess.run([sys.executable, "-c", code], env={**environ, **env}, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == str(hidden)


def test_progress_bars_only_on_the_main_process(monkeypatch):
    monkeypatch.setattr(loop.dist, "is_main", lambda: False)
    assert loop.progress(range(3)).disable
