"""benchmarks/gpu_check.py in CPU mode, and the training-path pieces it relies on."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from latentebsd import train as tr
from latentebsd.config import section

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "gpu_check.py"


def _load_script():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_check"] = module
    spec.loader.exec_module(module)
    return module


gcheck = _load_script()


def _run(out: Path, *extra: str) -> subprocess.CompletedProcess:
    # A process of its own: the check sets process-wide torch state (threads, dynamo).
    return subprocess.run([sys.executable, str(SCRIPT), "--cpu-mode", "--out", str(out), *extra],
                          capture_output=True, text=True, timeout=600, cwd=REPO)


@pytest.fixture(scope="module")
def cpu_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, Path]:
    out = tmp_path_factory.mktemp("gpu_check")
    return _run(out), out


def _positive(v: object) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v) and v > 0


def test_cpu_mode_runs_every_case_and_passes(cpu_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = cpu_run
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads((out / "gpu_check.json").read_text())
    assert doc["format"] == gcheck.FORMAT and doc["passed"] is True
    st = doc["settings"]
    assert st["mode"] == "cpu" and st["size"] == 32 and st["width_factor"] == 0.125
    assert st["encode_batch"] == section("maps")["batch_size"]
    assert st["decode_batch"] == section("evaluation")["decode_batch_size"]
    assert st["tolerances"]["device_rtol"] == 0.0
    env = doc["environment"]
    assert env["torch"] == str(torch.__version__) and env["device_type"] == "cpu" and env["device_name"]

    # every training case, with finite, positive rates and the run's losses
    cases = {(c["model"], c["combo"]): c for c in doc["cases"]}
    assert set(cases) == {(m, c) for m in gcheck.MODELS for c in gcheck.DEFAULT_COMBOS}
    n_steps = st["warmup_steps"] + st["steps"]
    for (model, combo), c in cases.items():
        bf16, compiled = gcheck.COMBOS[combo]
        for key in ("patterns_per_s", "ms_per_step", "paper_projection_h", "timed_s", "case_s"):
            assert _positive(c[key]), (model, combo, key, c[key])
        assert c["bf16"] is bf16 and c["compiled"] is compiled and c["compiled_to_the_end"] is compiled
        assert c["batch_size"] == st["batch_size"] and c["peak_gpu_memory_mib"] is None
        for metric in tr.METRICS:
            values = np.asarray(c["losses"][metric])
            assert values.shape == (n_steps,) and np.isfinite(values).all()
        loss = np.asarray(c["losses"]["loss"])
        assert loss[-3:].mean() < loss[:3].mean()
        assert (np.asarray(c["losses"]["contrastive"]) > 0).all() == (model == "contrastive128")
        if bf16:
            # CPU autocast really ran: bf16 losses are close to fp32, but not equal
            assert 0 < c["bf16_vs_fp32"]["first_steps_max_rel"] <= gcheck.BF16_STEP_RTOL

    # the device comparison: the CPU against itself, bit-identical
    assert {c["model"] for c in doc["comparisons"]} == set(gcheck.MODELS)
    for c in doc["comparisons"]:
        assert c["rtol"] == 0.0 and c["max_rel_diff"] == 0.0
        assert c["losses_a"] == c["losses_b"] and len(c["losses_a"]["loss"]) == st["compare_steps"]

    # encode / decode through the stages' functions
    assert {r["model"] for r in doc["inference"]} == set(gcheck.MODELS)
    for r in doc["inference"]:
        assert r["n"] == st["n_encode"] == 1000 and r["outputs_ok"] is True
        for key in ("encode_patterns_per_s", "encode_bf16_patterns_per_s", "decode_patterns_per_s"):
            assert _positive(r[key]), (r["model"], key)
    assert len(doc["goals"]) == len(gcheck.MODELS)
    # the paper's learning rate without and with our stabilisers (finite at these sizes)
    assert [(p["model"], p["run"]) for p in doc["probes"]] == [
        (m, r) for m in gcheck.PAPER_LR_MODELS for r in ("paper", "paper + ours")]
    assert all(p["first_non_finite_step"] is None and p["steps"] == st["paper_lr_steps"]
               for p in doc["probes"])
    assert all(p["diverged_step"] is None for p in doc["probes"] if p["run"] == "paper + ours")
    assert [(p["warmup"], p["clip"]) for p in doc["probes"][:2]] == [(0, None), (2, 1000.0)]
    assert doc["settings"]["training"]["lr_warmup_steps"] == st["lr_warmup"] == 2

    # every check passed, and every kind of check is there
    names = [c["name"] for c in doc["checks"]]
    assert all(c["passed"] for c in doc["checks"]), [c for c in doc["checks"] if not c["passed"]]
    for kind, n in (("device comparison", 4), ("losses fall", 12), ("bf16 band", 8), ("bf16 on", 8),
                    ("compiled", 4), ("encode/decode outputs", 4), ("everything ran", 1),
                    ("paper lr trains", 2)):
        assert sum(name.startswith(kind) for name in names) == n, kind
    assert not doc["skipped"]


def test_cpu_mode_writes_and_prints_the_markdown(cpu_run: tuple[subprocess.CompletedProcess, Path]) -> None:
    proc, out = cpu_run
    md = (out / "gpu_check.md").read_text()
    assert "| model | precision | compiled | patterns/s |" in md and "## Encode / decode" in md
    assert "## Checks: " in md and "0 failed" in md and "FAIL" not in md
    for model in gcheck.MODELS:
        # 3 training rows, encode/decode, comparison (+ 2 paper-lr rows)
        assert md.count(f"| {model} |") == 3 + 1 + 1 + 2 * (model in gcheck.PAPER_LR_MODELS)
    assert "| model | precision | compiled | patterns/s |" in proc.stdout
    assert "checks passed, 0 failed" in proc.stdout


def test_a_failed_check_exits_non_zero(tmp_path: Path) -> None:
    proc = _run(tmp_path, "--budget-s", "0", "--models", "vae16")
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    doc = json.loads((tmp_path / "gpu_check.json").read_text())
    assert doc["passed"] is False and len(doc["skipped"]) == 2 + 3 and not doc["cases"]
    assert [c["passed"] for c in doc["checks"]] == [False]
    assert "FAIL" in proc.stdout
    assert "**FAIL** everything ran within the budget" in (tmp_path / "gpu_check.md").read_text()


def test_checks_catch_a_loss_that_does_not_fall_and_bf16_off_the_band() -> None:
    st = gcheck.Settings(mode="cpu", size=32, width_factor=0.125, batch_size=16, lr_warmup=2, paper_lr_steps=0, paper_lr_warmup=2,
                         warmup_steps=2, steps=6,
                     n_train=64, compare_batch=8, compare_steps=4, compare_n_train=32, n_encode=10,
                     encode_batch=512, decode_batch=256, threads=1, seed=0, compile_backend="eager",
                     budget_s=10, models=["vae16"], combos=list(gcheck.DEFAULT_COMBOS), device_rtol=0.0)

    def case(loss: list[float], combo: str, **kw: object) -> dict:
        metrics = {m: [0.0] * len(loss) for m in tr.METRICS}
        metrics["loss"] = loss
        bf16, compiled = gcheck.COMBOS[combo]
        return {"model": "vae16", "combo": combo, "losses": metrics, "wanted_bf16": bf16, "bf16": bf16,
                "compile_requested": compiled, "compiled": compiled, "compiled_to_the_end": compiled, **kw}

    report = gcheck.Report(settings={}, environment={})
    ref = case([100.0, 90, 80, 70, 60, 50, 40, 30], "fp32-eager")
    gcheck.check_case(report, ref, None, st)
    gcheck.check_case(report, case([100.0] * 8, "fp32-eager"), None, st)  # flat: not training
    gcheck.check_case(report, case([100.0, 90, 80, 70, 60, 50, 40, float("nan")], "fp32-eager"), None, st)
    gcheck.check_case(report, case([103.0, 90, 80, 70, 60, 50, 40, 30], "bf16-eager"), ref, st)  # 3 % off
    gcheck.check_case(report, case([100.0, 90, 80, 70, 60, 50, 40, 30], "bf16-compiled",
                               compiled_to_the_end=False), ref, st)  # fell back to eager
    got = [(c["name"], c["passed"]) for c in report.checks]
    assert got == [
        ("losses fall vae16 fp32-eager", True), ("losses fall vae16 fp32-eager", False),
        ("losses fall vae16 fp32-eager", False),
        ("losses fall vae16 bf16-eager", True), ("bf16 on vae16 bf16-eager", True),
        ("bf16 band vae16 bf16-eager", False),
        ("losses fall vae16 bf16-compiled", True), ("bf16 on vae16 bf16-compiled", True),
        ("bf16 band vae16 bf16-compiled", True), ("compiled vae16 bf16-compiled", False),
    ]


def test_device_diff_uses_the_loss_scale_for_the_kl() -> None:
    a = {"loss": [1000.0, 900.0], "kl": [1e-6, 2.0], "l2": [999.0, 898.0]}
    b = {"loss": [1000.5, 900.0], "kl": [2e-6, 2.0], "l2": [999.0, 898.1]}
    np.testing.assert_allclose(gcheck._device_diff(a, b, "loss"), [0.5 / 1000.5, 0.0])
    np.testing.assert_allclose(gcheck._device_diff(a, b, "kl"), [1e-6 / 1000.5, 0.0])  # not 50 %
    np.testing.assert_allclose(gcheck._device_diff(a, b, "l2"), [0.0, 0.1 / 898.1])


def test_synthetic_patterns_are_band_like_on_a_screen() -> None:
    x, mask = gcheck.synthetic_patterns(20, 40, seed=1), gcheck.screen_mask(40)
    assert x.shape == (20, 40, 40) and x.dtype == np.float32
    assert (x[:, ~mask] == 0).all() and np.isclose(x[:, mask].min(axis=1), -1).all()
    assert np.isclose(x[:, mask].max(axis=1), 1).all()
    assert np.abs(x - x.mean(axis=0)).mean() > 0.05  # patterns differ
    np.testing.assert_array_equal(x, gcheck.synthetic_patterns(20, 40, seed=1))


# -- the training-path pieces the check uses (latentebsd.train) -----------------------


def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = gcheck.synthetic_patterns(40, 32, seed=2)
    return x[:30], x[30:], gcheck.screen_mask(32)


TRAINING = {"epochs": 1, "batch_size": 8, "width_factor": 0.25, "eval_batch_size": 10,
            "kl_hold_epochs": 0.5, "kl_warmup_epochs": 1, "contrastive": {"projection_dim": 8}}


@pytest.mark.parametrize("loss", ["vae", "contrastive"])
def test_training_steps_are_the_steps_of_run_epoch(tmp_path: Path, loss: str) -> None:
    """Two epochs of training_steps give _run_epoch's per-step losses (partial last
    batch and KL schedule included) and the same model, bit for bit."""
    variant = {"loss": loss, "latent_dim": 4}
    cfg = section("training", {**TRAINING, "epochs": 2})
    data = _arrays()
    a = tr._setup(data, variant, cfg, tmp_path / "a.pt", 3, False, 1)
    a.runner = tr._Runner(a.model, a.device, a.cfg, amp=a.fingerprint["bf16"])
    for epoch in range(2):
        tr._run_epoch(a, epoch)
    b = tr._setup(data, variant, cfg, tmp_path / "b.pt", 3, False, 1)
    b.runner = tr._Runner(b.model, b.device, b.cfg, amp=b.fingerprint["bf16"])
    stream = tr.training_steps(b)
    steps = torch.stack([next(stream) for _ in range(2 * 4)]).double().numpy()  # 30 = 3 x 8 + 6
    np.testing.assert_array_equal(steps, np.concatenate(a.iter_log)[:, 1:])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k


def test_setup_takes_arrays_as_it_takes_the_sample_file(tmp_path: Path) -> None:
    train, val, mask = _arrays()
    path = tmp_path / "dataset.h5"
    with h5py.File(path, "w") as f:
        f["train"], f["val"], f["mask"] = train, val, mask
    cfg = section("training", TRAINING)
    a = tr._setup(path, {"loss": "vae", "latent_dim": 4}, cfg, tmp_path / "a.pt", 0, False, 1)
    b = tr._setup((train, val, mask), {"loss": "vae", "latent_dim": 4}, cfg, tmp_path / "b.pt", 0, False, 1)
    assert a.fingerprint == b.fingerprint
    assert torch.equal(a.train, b.train) and torch.equal(a.val, b.val) and torch.equal(a.mask, b.mask)
    with pytest.raises(ValueError, match="inconsistent shapes"):
        tr._setup((train, val, mask[:16]), {"loss": "vae", "latent_dim": 4}, cfg, tmp_path / "c.pt", 0, False, 1)
    with pytest.raises(ValueError, match="empty training set"):
        tr._setup((train[:0], val, mask), {"loss": "vae", "latent_dim": 4}, cfg, tmp_path / "c.pt", 0, False, 1)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: the check would run")
def test_without_a_gpu_the_gpu_mode_says_so(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert gcheck.main(["--out", str(tmp_path / "x")]) == 2
    assert "--cpu-mode" in capsys.readouterr().err and not (tmp_path / "x").exists()
