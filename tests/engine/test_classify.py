import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from rnnpool.cli import main
from rnnpool.data import BadSampleError
from rnnpool.deploy.programs import toolchain_available
from rnnpool.engine import ClassifyConfig, evaluate_checkpoint, train_classifier
from rnnpool.engine.checkpoint import load_checkpoint
from rnnpool.errors import InvalidInputError
from rnnpool.models.checkpoint import CheckpointError
from rnnpool.nn import RNNPool2d

from ..conftest import SHARED_DATA

SMALL = dict(model="mobilenetv2_035_rnnpool", input_size=32, batch_size=6, workers=0, lr=0.05, device="cpu")


def test_loss_falls_and_outputs_run_folder(color_data, tmp_path, capsys):
    cfg = ClassifyConfig(data=str(color_data), epochs=4, project=str(tmp_path / "runs"), name="toy", optimizer="adamw", lr=0.005,
                         **{k: v for k, v in SMALL.items() if k != "lr"})
    result = train_classifier(cfg)
    run = tmp_path / "runs" / "toy"
    out = capsys.readouterr().out
    assert f"run folder: {run}" in out.splitlines()[0] and f"run finished: {run}" in out
    for name in ("config.yaml", "metrics.csv", "curves.png", "weights/last.pt", "weights/best.pt"):
        assert (run / name).exists(), name
    rows = (run / "metrics.csv").read_text().splitlines()
    assert len(rows) == 5 and rows[0].startswith("epoch,lr,train_loss")
    losses = [float(r.split(",")[2]) for r in rows[1:]]
    assert losses[-1] < losses[0]
    assert result["final"]["samples"] == 18 and len(result["final"]["per_class"]) == 3
    again = evaluate_checkpoint("mobilenetv2_035_rnnpool", str(run / "weights" / "last.pt"), str(color_data), input_size=32, workers=0, device="cpu")
    assert again["top1"] == pytest.approx(result["final"]["top1"])


def test_resume_is_bit_exact(color_data, tmp_path):
    common = dict(data=str(color_data), epochs=2, project=str(tmp_path), **SMALL)
    train_classifier(ClassifyConfig(name="straight", **common))
    train_classifier(ClassifyConfig(name="interrupted", stop_epoch=1, **common))
    # the same 2-epoch run, picked up from its epoch-1 checkpoint (as after a kill); it goes on in its own folder
    train_classifier(ClassifyConfig(name="exp", resume=str(tmp_path / "interrupted" / "weights" / "last.pt"), **common))
    assert not (tmp_path / "exp").exists()
    a = load_checkpoint(tmp_path / "straight" / "weights" / "last.pt")["model"]
    b = load_checkpoint(tmp_path / "interrupted" / "weights" / "last.pt")["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert len((tmp_path / "interrupted" / "metrics.csv").read_text().splitlines()) == 3
    config = (tmp_path / "interrupted" / "config.yaml").read_text()
    with pytest.raises(ValueError, match=r"other settings \(epochs: 2 -> 3, lr: 0.05 -> 0.1\)"):
        train_classifier(ClassifyConfig(name="interrupted", resume=str(tmp_path / "interrupted" / "weights" / "last.pt"),
                                        **{**common, "epochs": 3, "lr": 0.1}))
    assert (tmp_path / "interrupted" / "config.yaml").read_text() == config  # the refused resume wrote nothing


def _wait_for(path, proc, timeout=120.0):
    deadline = time.time() + timeout
    while not path.exists():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < deadline, f"{path} never appeared"
        time.sleep(0.01)


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT])
def test_killed_or_interrupted_run_resumes_exactly(sig, color_data, tmp_path):
    """A run stopped mid-epoch (SIGKILL, or Ctrl-C) loses at most that epoch; --resume ends where an
    uninterrupted run ends, weight for weight."""
    cli = [sys.executable, "-m", "rnnpool.cli", "train", "classify", "--model", "mobilenetv2_035_rnnpool", "--data", str(color_data),
           "--input-size", "64", "--epochs", "4", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--project", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    run = lambda *extra: subprocess.run(cli + list(extra), capture_output=True, text=True, env=env, timeout=300)  # noqa: E731
    assert run("--name", "straight").returncode == 0
    # SIGINT's default action restored in the child: a shell that starts the tests in the background hands its
    # children SIGINT ignored, and Python then installs no KeyboardInterrupt handler
    proc = subprocess.Popen(cli + ["--name", "stopped"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    last = tmp_path / "stopped" / "weights" / "last.pt"
    _wait_for(last, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    saved = load_checkpoint(last)["epoch"]
    assert saved < 4, "the run finished before it could be stopped"
    if sig == signal.SIGINT:
        assert proc.returncode == 130
        assert f"interrupted: {last} holds epoch {saved}; continue with --resume {last}" in err
    else:
        assert proc.returncode == -signal.SIGKILL
    resumed = run("--name", "stopped", "--resume", str(last))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    a = load_checkpoint(tmp_path / "straight" / "weights" / "last.pt")["model"]
    b = load_checkpoint(last)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    losses = lambda name: [row.split(",")[:3] for row in (tmp_path / name / "metrics.csv").read_text().splitlines()]  # noqa: E731
    assert losses("stopped") == losses("straight")  # one row per epoch, none lost or doubled


def test_bad_image_is_named_or_skipped(color_data, tmp_path):
    bad = color_data / "train" / "red" / "zz_broken.png"
    bad.write_bytes(b"not an image at all")
    cfg = ClassifyConfig(data=str(color_data), epochs=1, project=str(tmp_path), name="bad", **SMALL)
    with pytest.raises(BadSampleError, match="zz_broken.png"):
        train_classifier(cfg)
    assert not (tmp_path / "bad").exists()  # failed before its first epoch: no folder left, a rerun takes the name
    cfg.skip_bad, cfg.name = True, "skip"
    train_classifier(cfg)
    assert (tmp_path / "skip" / "metrics.csv").read_text().splitlines()[1].split(",")[6] == "1"


def test_bad_configuration_errors(color_data, tmp_path):
    with pytest.raises(FileNotFoundError, match="no train folder"):
        train_classifier(ClassifyConfig(data=str(tmp_path), **SMALL))
    with pytest.raises(ValueError, match="unknown optimizer 'adam'"):
        train_classifier(ClassifyConfig(data=str(color_data), optimizer="adam", project=str(tmp_path), **SMALL))
    with pytest.raises(CheckpointError, match="corrupt or not a checkpoint"):
        (tmp_path / "junk.pt").write_bytes(b"junk")
        load_checkpoint(tmp_path / "junk.pt")


def test_vww_layout(tmp_path):
    from .conftest import make_color_dataset

    data = make_color_dataset(tmp_path / "vww", classes=("no_person", "person"), per_class=(6, 3))
    result = train_classifier(ClassifyConfig(data=str(data), layout="vww", epochs=1, project=str(tmp_path), name="vww", **SMALL))
    assert result["classes"] == ["no_person", "person"]


@pytest.mark.parametrize("workers", ["0", "2"])
def test_cli_names_a_bad_image_in_one_line_with_any_workers(workers, color_data, tmp_path):
    """A broken image read by a DataLoader worker is the same one error line as one read in the main process."""
    (color_data / "train" / "red" / "zz_broken.png").write_bytes(b"not an image at all")
    with pytest.raises(SystemExit) as exit_info:
        main(["train", "classify", "--model", "mobilenetv2_035", "--data", str(color_data), "--input-size", "32", "--epochs", "1",
              "--batch-size", "8", "--workers", workers, "--device", "cpu", "--project", str(tmp_path), "--name", "bad"])
    message = str(exit_info.value.code)
    assert message.startswith("error: cannot read image ") and "zz_broken.png" in message and "\n" not in message
    assert "Traceback" not in message


def test_cli_train_and_eval(color_data, tmp_path, capsys):
    main(["train", "classify", "--model", "mobilenetv2_035", "--data", str(color_data), "--input-size", "32", "--epochs", "1",
          "--batch-size", "8", "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "cli"])
    main(["eval", "classify", "--model", "mobilenetv2_035", "--data", str(color_data), "--input-size", "32", "--workers", "0",
          "--weights", str(tmp_path / "cli" / "weights" / "last.pt")])
    captured = capsys.readouterr()
    out = captured.out
    assert "top-1" in out and "green" in out
    # validation shows a progress bar; a CPU run's training bar shows no memory field ("mem=cpu" said nothing)
    assert "validate" in captured.err and "mem=" not in captured.err and "gpu_mem" not in captured.err
    explicit = [line for line in out.splitlines() if "top-1" in line][-1]  # the eval's (training prints one too)
    # the model and its input size come from the checkpoint (trained at 32, not the default 224)
    main(["eval", "classify", "--data", str(color_data), "--workers", "0", "--weights", str(tmp_path / "cli" / "weights" / "last.pt")])
    from_checkpoint = next(line for line in capsys.readouterr().out.splitlines() if "top-1" in line)
    assert from_checkpoint == explicit and from_checkpoint.startswith("mobilenetv2_035 at 32x32: top-1")
    with pytest.raises(SystemExit, match="is mobilenetv2_035, not mobilenetv2_035_rnnpool"):
        main(["eval", "classify", "--model", "mobilenetv2_035_rnnpool", "--data", str(color_data), "--workers", "0",
              "--weights", str(tmp_path / "cli" / "weights" / "last.pt")])


def test_cli_model_arguments_train_an_ablation_variant(color_data, tmp_path, capsys):
    """--model-arg builds the pooling-ablation variant; eval rebuilds it from the checkpoint's run settings."""
    common = ["--data", str(color_data), "--input-size", "32", "--workers", "0", "--device", "cpu"]
    main(["train", "classify", "--model", "mobilenetv2_rnnpool", *common, "--epochs", "1", "--batch-size", "8",
          "--project", str(tmp_path), "--name", "avg", "--model-arg", "downsample=avg", "--model-arg", "width_mult=0.35"])
    ckpt = load_checkpoint(tmp_path / "avg" / "weights" / "last.pt")
    assert ckpt["config"]["model_kwargs"] == {"downsample": "avg", "width_mult": 0.35}
    assert not any("rnn" in key for key in ckpt["model"])
    capsys.readouterr()
    main(["eval", "classify", "--model", "mobilenetv2_rnnpool", *common, "--weights", str(tmp_path / "avg" / "weights" / "last.pt")])
    assert "top-1" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="error: model 'mobilenetv2_rnnpool' has no option 'pool'"):
        main(["train", "classify", "--model", "mobilenetv2_rnnpool", *common, "--project", str(tmp_path), "--model-arg", "pool=avg"])
    with pytest.raises(SystemExit):
        main(["train", "classify", "--model", "mobilenetv2_rnnpool", *common, "--model-arg", "downsample"])
    assert "model arguments look like KEY=VALUE" in capsys.readouterr().err


def test_torchrun_ddp_two_processes_gloo(color_data, tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "rnnpool.cli",
           "train", "classify", "--model", "mobilenetv2_035_rnnpool", "--data", str(color_data), "--input-size", "32",
           "--epochs", "1", "--batch-size", "4", "--workers", "0", "--device", "cpu", "--project", str(tmp_path), "--name", "ddp"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    config = (tmp_path / "ddp" / "config.yaml").read_text()
    assert "world_size: 2" in config
    assert "on 18 images" in proc.stdout  # every val image counted once across the two processes


@pytest.mark.skipif(not (SHARED_DATA / "cifar10").is_dir(), reason="../shared/data/cifar10 not present (real-data check)")
def test_real_cifar10_few_steps(tmp_path):
    # a 2-class slice of the real CIFAR-10 JPEGs, linked into the ImageFolder layout
    for split, src in (("train", "train"), ("val", "test")):
        for name in ("airplane", "frog"):
            folder = tmp_path / "c10" / split / name
            folder.mkdir(parents=True)
            for f in sorted((SHARED_DATA / "cifar10" / src / name).iterdir())[:40]:
                (folder / f.name).symlink_to(f)
    result = train_classifier(ClassifyConfig(data=str(tmp_path / "c10"), epochs=2, project=str(tmp_path / "runs"), name="c10",
                                             optimizer="adamw", **{**SMALL, "lr": 0.003, "batch_size": 16}))
    assert result["final"]["samples"] == 80
    rows = (tmp_path / "runs" / "c10" / "metrics.csv").read_text().splitlines()[1:]
    losses = [float(r.split(",")[2]) for r in rows]
    assert losses[-1] < losses[0]  # two epochs of AdamW on 80 real images: the training loss falls


def test_distillation_loss_against_its_formula():
    from rnnpool.engine.distill import distillation_loss

    torch.manual_seed(0)
    student, teacher, labels = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 3, 1, 4])
    ce = torch.nn.CrossEntropyLoss()
    T = 3.0
    p_teacher = torch.softmax(teacher / T, 1)
    kl = (p_teacher * (torch.log(p_teacher) - torch.log_softmax(student / T, 1))).sum(1).mean()
    torch.testing.assert_close(distillation_loss(student, teacher, labels, T, 0.0, ce), ce(student, labels))
    torch.testing.assert_close(distillation_loss(student, teacher, labels, T, 1.0, ce), T * T * kl)
    torch.testing.assert_close(distillation_loss(student, teacher, labels, T, 0.25, ce), 0.75 * ce(student, labels) + 0.25 * T * T * kl)
    assert distillation_loss(teacher, teacher, labels, T, 1.0, ce).abs() < 1e-6  # a student equal to its teacher


def test_fitted_model_trains_by_distillation_and_evaluates(color_data, tmp_path, capsys):
    """rnnpool fit --save -> train classify --model fitted.pt --teacher ... -> eval classify / profile of its checkpoint."""
    common = ["--data", str(color_data), "--input-size", "32", "--workers", "0"]
    fitted = tmp_path / "fitted.pt"
    main(["fit", "mobilenetv2_035", "--input", "3x32x32", "--ram", "1MiB", "--save", str(fitted)])
    main(["train", "classify", "--model", "mobilenetv2_035", *common, "--epochs", "1", "--batch-size", "8", "--device", "cpu",
          "--project", str(tmp_path), "--name", "teacher"])
    teacher = tmp_path / "teacher" / "weights" / "last.pt"
    main(["train", "classify", "--model", str(fitted), *common, "--epochs", "1", "--batch-size", "8", "--device", "cpu",
          "--project", str(tmp_path), "--name", "student", "--teacher", "mobilenetv2_035", "--teacher-weights", str(teacher),
          "--distill-weight", "0.7"])
    capsys.readouterr()
    student = tmp_path / "student" / "weights" / "last.pt"
    checkpoint = torch.load(student, map_location="cpu", weights_only=False)
    assert checkpoint["config"]["teacher"] == "mobilenetv2_035" and checkpoint["config"]["distill_weight"] == 0.7
    assert any(isinstance(m, RNNPool2d) for m in checkpoint["fitted_model"].modules())
    main(["eval", "classify", "--data", str(color_data), "--workers", "0", "--weights", str(student)])
    line = next(l for l in capsys.readouterr().out.splitlines() if "top-1" in l)
    assert line.startswith(f"{fitted} at 32x32: top-1")
    main(["profile", str(student), "--json", "-"])  # the run's checkpoint carries the model and its input
    assert json.loads(capsys.readouterr().out)["input"] == [1, 3, 32, 32]
    if toolchain_available("host"):  # and its int8 C program, from the trained weights, at the trained input
        image = next(p for p in Path(color_data).rglob("*") if p.suffix in (".png", ".jpg"))
        main(["export", "c", "--weights", str(student), "-o", str(tmp_path / "c"), "--calib", str(color_data), "--run", str(image),
              "--json", str(tmp_path / "export.json"), "--calibration", "mse"])
        export = json.loads((tmp_path / "export.json").read_text())
        assert export["calibration"]["method"] == "mse" and export["calibration"]["equalized"]
        classes = [m for m in checkpoint["fitted_model"].modules() if isinstance(m, torch.nn.Linear)][-1].out_features
        assert export["bit_exact"] and export["input"]["height"] == 32 and len(export["logits"]) == classes
        assert export["weights"] == str(student)
    with pytest.raises(SystemExit, match="distillation needs both teacher and teacher_weights"):
        main(["train", "classify", "--model", str(fitted), *common, "--teacher", "mobilenetv2_035"])


def test_bn_momentum_sets_every_batchnorm(color_data, tmp_path):
    """--bn-momentum replaces the model's own: at ~0 the running statistics stay at their initial 0 / 1."""
    common = dict(data=str(color_data), epochs=1, max_steps=2, project=str(tmp_path), **SMALL)
    for name, momentum in (("frozen", 1e-12), ("default", None)):
        train_classifier(ClassifyConfig(name=name, bn_momentum=momentum, **common))
    frozen, default = (torch.load(tmp_path / n / "weights" / "last.pt", weights_only=False)["model"] for n in ("frozen", "default"))
    means = [k for k in frozen if k.endswith("running_mean")]
    assert means and all(frozen[k].abs().max() < 1e-9 for k in means)
    assert any(default[k].abs().max() > 1e-3 for k in means)
    with pytest.raises(InvalidInputError, match="bn_momentum must be in"):
        ClassifyConfig(name="x", bn_momentum=0.0, **common)


def test_time_limit_ends_the_run_after_an_epoch_and_says_so(color_data, tmp_path, capsys):
    """A limit shorter than one epoch: the run ends after its first epoch (checkpointed and validated), the
    schedule still spans --epochs, and the message says how to read it."""
    cfg = ClassifyConfig(data=str(color_data), epochs=5, project=str(tmp_path), name="short", time_limit=1e-5, **SMALL)
    result = train_classifier(cfg)
    out = capsys.readouterr().out
    assert "time limit of 1e-05 min: stopping after epoch 1 of 5" in out
    assert result["last_epoch"]["epoch"] == 1 and len((tmp_path / "short" / "metrics.csv").read_text().splitlines()) == 2
    assert load_checkpoint(tmp_path / "short" / "weights" / "last.pt")["epoch"] == 1
