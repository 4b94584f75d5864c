"""GPU check of the training, encode and decode paths: one prepared command, pass / fail.

A GPU machine comes to this project now and then, for minutes, so this one command
measures and checks everything the GPU path does in about 5 minutes on an H100 / H200
class GPU, and ``--cpu-mode`` runs the same code at tiny sizes on the CPU in the test
suite (``tests/test_gpu_check.py``), so that it cannot rot.

What it does
------------
1. Builds a synthetic training set in memory (band-like patterns on a circular screen,
   in [-1, 1], 0 off the screen; nothing read, nothing downloaded).
2. Device comparison (correctness): fp32 training on the GPU and on the CPU from the
   same seed, TF32 off, for the first ``compare_steps`` steps; the per-step losses must
   agree within ``DEVICE_RTOL``. Both runs draw the in-step noise (sampling epsilon,
   contrastive views) from one CPU generator (:func:`shared_noise`): a CUDA generator
   draws other numbers than a CPU one from the same seed. In ``--cpu-mode`` the CPU is
   compared with itself, run twice, and must be bit-identical.
3. Training cases: VAE d = 16 / 128 / 256 and contrastive d = 128 at Table 2 widths
   (``width_factor`` 1), each as fp32 eager, bf16 eager and bf16 compiled (``--combos``),
   a fixed number of steps through the training code of rule ``train``
   (``latentebsd.train``: ``_setup``, ``_Runner``, ``try_compile`` at ``compile_shapes``,
   ``training_steps`` = ``_run_epoch``'s batches and ``_train_step``, after
   ``configure_device``), the schema's settings - the paper's optimiser (Adam lr 1e-3)
   with our stabilisers, the learning-rate warm-up shortened to ``lr_warmup`` steps so
   that a short case trains at the full rate (:data:`PAPER_LR_MODELS`). Reported:
   training patterns/s, ms per step, peak GPU memory (``torch.cuda.max_memory_allocated``,
   reset per case), the projected time of the paper's 250 epochs x 76.8k patterns.
   Checked: the losses fall over the run; bf16 losses stay within ``BF16_*`` of fp32
   (same seed, batches and noise); bf16 really on; compilation succeeded and never fell
   back to eager mode.
4. Encode and decode ``n_encode`` patterns (100k) per model through
   ``models.encode_patterns`` / ``models.decode_latents`` (what the encode and decode
   stages call) at ``maps.batch_size`` / ``evaluation.decode_batch_size``, from tensors
   already on the device, with the torch settings those jobs run with (they never call
   ``configure_device``); plus, for information, encode under bf16 autocast. Goal:
   >= 100k patterns/s encode (reported, not a pass / fail check).

3b. The paper's learning rate (``benchmarks/paper_lr.py``): vae128 and vae256 at batch
   256 for ``paper_lr_steps`` steps, without our stabilisers (information: where it
   diverges) and with them (checked: finite, the loss falls).

Order: 2, the eager cases of 3, 3b, 4, the compiled cases of
3 (so that the one unknown of a first GPU run, compile time, can cost only those);
``--budget-s`` (GPU: 320 s) skips a part that would end after it, and that is a failed
check.

Writes ``gpu_check.json`` (every number, device, versions, settings, per-step losses)
and ``gpu_check.md`` (the tables) to ``--out``, prints the tables, and exits 1 if any
check failed (2 if there is no GPU and no ``--cpu-mode``).

Examples
--------
    python benchmarks/gpu_check.py --out results/gpu_check               # GPU, <= ~5.5 min
    python benchmarks/gpu_check.py --cpu-mode --out /tmp/gpu_check_cpu   # CPU, tiny, < 1 min
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import math
import os
import platform
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import latentebsd  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from latentebsd import models
from latentebsd import train as tr
from latentebsd.config import section

FORMAT = "latentebsd.gpu_check/1"
PAPER_EPOCHS = 250
PAPER_TRAIN_PATTERNS = 76_800
#: The paper's training times on an RTX 4090 (MATLAB), hours.
PAPER_HOURS = {"vae": 6.0, "contrastive": 40.0}
ENCODE_GOAL = 100_000  # patterns/s

MODELS: dict[str, dict[str, Any]] = {
    "vae16": {"loss": "vae", "latent_dim": 16},
    "vae128": {"loss": "vae", "latent_dim": 128},
    "vae256": {"loss": "vae", "latent_dim": 256},
    "contrastive128": {"loss": "contrastive", "latent_dim": 128},
}
#: name -> (bf16, compile)
COMBOS: dict[str, tuple[bool, bool]] = {
    "fp32-eager": (False, False),
    "bf16-eager": (True, False),
    "bf16-compiled": (True, True),
    "fp32-compiled": (False, True),
}
DEFAULT_COMBOS = ("fp32-eager", "bf16-eager", "bf16-compiled")

# Tolerances (see benchmarks/RESULTS.md, "GPU check", for the reasoning).
#: fp32 GPU (TF32 off) vs fp32 CPU, per step, relative; the CPU against itself: 0.
DEVICE_RTOL = 1e-3
#: bf16 vs fp32 (same device, seed, batches, noise): each of the first steps, relative.
BF16_STEP_RTOL = 0.02
#: bf16 vs fp32: mean loss over the last quarter of the run, relative.
BF16_TAIL_RTOL = 0.05
#: the loss must fall: mean of the last quarter <= (1 - this) x mean of the first quarter.
MIN_FALL = 0.05
#: steps of the bf16-vs-fp32 per-step comparison.
BF16_STEPS = 4
PAPER_LEARNING_RATE = 1e-3
#: Every case trains at the paper's learning rate with the schema's stabilisers
#: (gradient-norm clipping and a learning-rate warm-up; ``latentebsd.train``), the
#: warm-up shortened to ``Settings.lr_warmup`` steps so that the short cases train at
#: the full rate. Without the stabilisers the paper's rate diverged at Table 2 widths
#: (H200, batch 256: vae128 non-finite from step 38, vae256 from step 3): the
#: :data:`PAPER_LR_MODELS` are trained once without and once with them for
#: ``Settings.paper_lr_steps`` (``benchmarks/paper_lr.py``); "with" must stay finite
#: and fall (a check), "without" is reported (information).
PAPER_LR_MODELS = ("vae128", "vae256")


@dataclass
class Settings:
    """Sizes and step counts of one run (GPU defaults or ``--cpu-mode``)."""

    mode: str  # "gpu" or "cpu"
    size: int
    width_factor: float
    batch_size: int
    lr_warmup: int  # learning-rate warm-up of the cases (the schema's is longer than a case)
    paper_lr_steps: int
    paper_lr_warmup: int
    warmup_steps: int
    steps: int
    n_train: int
    compare_batch: int
    compare_steps: int
    compare_n_train: int
    n_encode: int
    encode_batch: int
    decode_batch: int
    threads: int
    seed: int
    compile_backend: str
    budget_s: float
    models: list[str]
    combos: list[str]
    device_rtol: float
    bf16_step_rtol: float = BF16_STEP_RTOL
    bf16_tail_rtol: float = BF16_TAIL_RTOL
    bf16_steps: int = BF16_STEPS
    min_fall: float = MIN_FALL


@dataclass
class Report:
    """Everything measured; written as the JSON."""

    settings: dict[str, Any]
    environment: dict[str, Any]
    cases: list[dict[str, Any]] = field(default_factory=list)
    comparisons: list[dict[str, Any]] = field(default_factory=list)
    inference: list[dict[str, Any]] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    goals: list[dict[str, Any]] = field(default_factory=list)
    probes: list[dict[str, Any]] = field(default_factory=list)  # paper learning rate (information)
    skipped: list[str] = field(default_factory=list)

    def check(self, name: str, passed: bool, detail: str) -> None:
        self.checks.append({"name": name, "passed": bool(passed), "detail": detail})
        print(f"  {'PASS' if passed else 'FAIL'}  {name}: {detail}", flush=True)


# --------------------------------------------------------------------------- data


def screen_mask(size: int) -> np.ndarray:
    """A circular detector screen (True on it), 96 % of the side across."""
    yy, xx = np.mgrid[:size, :size]
    c = (size - 1) / 2
    return (yy - c) ** 2 + (xx - c) ** 2 <= (0.48 * size) ** 2


def synthetic_patterns(n: int, size: int, seed: int, chunk: int = 256) -> np.ndarray:
    """``n`` band-like patterns (n, size, size) float32: a smooth background plus five
    Kikuchi-like bands (a flat bright band with dark edges, random direction, position
    and width) and a little noise, rescaled per pattern to [-1, 1] over the screen and
    0 off it (as ``preprocess`` leaves them)."""
    rng = np.random.default_rng(seed)
    mask = screen_mask(size)
    yy, xx = (np.mgrid[:size, :size].astype(np.float32) / size - 0.5)
    out = np.empty((n, size, size), np.float32)
    k = 5
    for start in range(0, n, chunk):
        c = min(chunk, n - start)
        theta = rng.uniform(0, np.pi, (c, k, 1, 1)).astype(np.float32)
        rho = rng.uniform(-0.35, 0.35, (c, k, 1, 1)).astype(np.float32)
        half = rng.uniform(0.02, 0.06, (c, k, 1, 1)).astype(np.float32)
        dist = np.abs(xx * np.cos(theta) + yy * np.sin(theta) - rho)
        bands = np.exp(-((dist / half) ** 6)) - 0.4 * np.exp(-(((dist - half) / (0.3 * half)) ** 2))
        centre = rng.uniform(-0.1, 0.1, (c, 2, 1, 1)).astype(np.float32)
        background = np.exp(-((yy - centre[:, 0]) ** 2 + (xx - centre[:, 1]) ** 2) / 0.25)
        p = background + 0.5 * bands.sum(axis=1) + rng.normal(0, 0.03, (c, size, size)).astype(np.float32)
        on = p[:, mask]
        lo, hi = on.min(axis=1)[:, None, None], on.max(axis=1)[:, None, None]
        p = 2.0 * (p - lo) / (hi - lo) - 1.0
        out[start:start + c] = np.where(mask, p, 0.0)
    return out


# --------------------------------------------------------------------------- helpers


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def _peak_mib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """|a - b| / |b| elementwise (0 where both are 0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    diff = np.abs(a - b)
    return np.where(diff == 0, 0.0, diff / np.maximum(np.abs(b), 1e-30))


def _quarter_means(loss: np.ndarray) -> tuple[float, float]:
    q = max(1, len(loss) // 4)
    return float(loss[:q].mean()), float(loss[-q:].mean())


@contextlib.contextmanager
def shared_noise(seed: int) -> Iterator[None]:
    """Every random draw inside a training step (the sampling epsilon of
    ``reparameterize``, the contrastive views of ``augment``) from one CPU generator
    seeded with ``seed``, on any training device; the draws are then moved to the
    device. Only for the device comparison: a CUDA generator gives other numbers than
    a CPU one from the same seed, so without this two devices never agree. The patched
    names are the ones ``latentebsd.train`` calls; everything else is unchanged."""
    gen = torch.Generator().manual_seed(int(seed))
    real_rep, real_aug = tr.reparameterize, tr.augment

    def rep(mean: torch.Tensor, logvar: torch.Tensor, generator: Any = None) -> torch.Tensor:
        return real_rep(mean.cpu(), logvar.cpu(), gen).to(mean.device)

    def aug(x: torch.Tensor, mask: torch.Tensor, generator: Any = None, **kw: Any) -> torch.Tensor:
        return real_aug(x.cpu(), mask.cpu(), gen, **kw).to(x.device)

    tr.reparameterize, tr.augment = rep, aug
    try:
        yield
    finally:
        tr.reparameterize, tr.augment = real_rep, real_aug


@contextlib.contextmanager
def tf32_off() -> Iterator[None]:
    m, c = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = m, c


def training_settings(st: Settings, bf16: bool, compile_: bool, batch_size: int) -> dict[str, Any]:
    """The validated ``training`` section of a case: the schema's (the paper's
    optimiser and our stabilisers) with the case's width, batch size, precision,
    compile switch and the check's short learning-rate warm-up."""
    return section("training", {"width_factor": st.width_factor, "batch_size": batch_size,
                                "learning_rate": PAPER_LEARNING_RATE, "bf16": bf16,
                                "compile": compile_, "lr_warmup_steps": st.lr_warmup})


# --------------------------------------------------------------------------- training


def train_case(data: tuple[np.ndarray, np.ndarray, np.ndarray], variant: dict[str, Any],
               cfg: dict[str, Any], st: Settings, use_gpu: bool, warmup: int, steps: int,
               workdir: Path, force_amp: bool | None = None, noise_seed: int | None = None
               ) -> dict[str, Any]:
    """``warmup + steps`` training steps as rule ``train`` takes them (the setup, runner
    and compilation of :func:`latentebsd.train.train_variant`); the last ``steps``
    timed. ``force_amp`` replaces the GPU-only bf16 decision (``--cpu-mode``: CPU
    autocast stands in for the GPU's); ``noise_seed`` draws the in-step noise from a
    CPU generator (:func:`shared_noise`)."""
    t_case = time.perf_counter()
    s = tr._setup(data, variant, cfg, workdir / "checkpoint.pt", st.seed, use_gpu, st.threads)
    device = s.device
    s.runner = tr._Runner(s.model, device, s.cfg, amp=s.fingerprint["bf16"] if force_amp is None else force_amp)
    compiled, compile_s = False, 0.0
    if s.cfg["compile"] and (device.type == "cuda" or st.mode == "cpu"):
        torch._dynamo.reset()
        t0 = time.perf_counter()
        shapes = tr.compile_shapes(len(s.train), len(s.val), s.cfg, variant["loss"] == "contrastive")
        compiled = s.runner.try_compile(s.mask, shapes, backend=st.compile_backend)
        _sync(device)
        compile_s = time.perf_counter() - t0
    noise = shared_noise(noise_seed) if noise_seed is not None else contextlib.nullcontext()
    with noise:
        stream = tr.training_steps(s)
        t0 = time.perf_counter()
        rows = [next(stream) for _ in range(warmup)]
        _sync(device)
        warmup_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        rows += [next(stream) for _ in range(steps)]
        _sync(device)
        timed_s = time.perf_counter() - t0
        stream.close()
    losses = torch.stack(rows).cpu().double().numpy()
    still_compiled = compiled and all(
        getattr(f, "compiled", None) is not None for f in (s.runner.encode, s.runner.decode))
    bs = int(s.cfg["batch_size"])
    rate = steps * bs / timed_s if steps else float("nan")
    out = {
        "device": device.type, "bf16": bool(s.runner.amp), "compile_requested": bool(s.cfg["compile"]),
        "compiled": bool(compiled), "compiled_to_the_end": bool(still_compiled),
        "compile_s": compile_s, "batch_size": bs, "learning_rate": float(s.cfg["learning_rate"]),
        "warmup_steps": warmup, "steps": steps,
        "warmup_s": warmup_s, "timed_s": timed_s, "patterns_per_s": rate,
        "ms_per_step": 1e3 * timed_s / steps if steps else float("nan"),
        "peak_gpu_memory_mib": _peak_mib(device),
        "paper_projection_h": PAPER_EPOCHS * PAPER_TRAIN_PATTERNS / rate / 3600 if steps else float("nan"),
        "losses": {m: losses[:, i].tolist() for i, m in enumerate(tr.METRICS)},
    }
    del s, stream, rows
    out["case_s"] = time.perf_counter() - t_case
    return out


def compare_devices(report: Report, data: tuple[np.ndarray, np.ndarray, np.ndarray], name: str,
                    st: Settings, workdir: Path) -> None:
    """fp32 on the GPU (TF32 off) vs on the CPU, same seed, same batches, same noise; in
    ``--cpu-mode`` the CPU against itself (bit-identical)."""
    variant = MODELS[name]
    train_np, _, mask = data
    small = (train_np[:st.compare_n_train], train_np[:0], mask)
    cfg = training_settings(st, False, False, st.compare_batch)
    t0 = time.perf_counter()
    runs = {}
    for label, use_gpu in (("a", st.mode == "gpu"), ("b", False)):
        ctx = tf32_off() if use_gpu else contextlib.nullcontext()
        with ctx:
            # _setup turns TF32 on (configure_device): switch it off again inside
            with _tf32_stays_off() if use_gpu else contextlib.nullcontext():
                runs[label] = train_case(small, variant, cfg, st, use_gpu, st.compare_steps, 0, workdir,
                                         noise_seed=st.seed + 1)
        _free(torch.device("cuda") if use_gpu else torch.device("cpu"))
    a, b = runs["a"], runs["b"]
    rel = {m: float(_device_diff(a["losses"], b["losses"], m).max()) for m in tr.METRICS}
    worst = float(max(rel.values()))
    passed = worst <= st.device_rtol
    what = (f"fp32 {a['device']} (TF32 off) vs {b['device']}" if st.mode == "gpu"
            else "fp32 CPU vs CPU again")
    report.comparisons.append({
        "model": name, "what": what, "steps": st.compare_steps, "batch_size": st.compare_batch,
        "rtol": st.device_rtol, "max_rel_diff": worst, "max_rel_diff_per_metric": {k: float(v) for k, v in rel.items()},
        "losses_a": a["losses"], "losses_b": b["losses"], "seconds": time.perf_counter() - t0,
    })
    tol = "bit-identical" if st.device_rtol == 0 else f"rel <= {st.device_rtol:g}"
    report.check(f"device comparison {name}", passed,
                 f"{what}, first {st.compare_steps} steps: max rel diff {worst:.2e} ({tol})")


def _device_diff(a: dict[str, list[float]], b: dict[str, list[float]], metric: str) -> np.ndarray:
    """Per-step difference of ``metric`` between two runs, relative to ``b``'s value;
    the KL relative to ``b``'s loss instead: at the Glorot initialisation the KL is ~0,
    a difference of O(1) terms whose own relative error means nothing, and it enters
    the loss with weight beta."""
    diff = np.abs(np.asarray(a[metric], np.float64) - np.asarray(b[metric], np.float64))
    scale = np.abs(np.asarray(b["loss" if metric == "kl" else metric], np.float64))
    return np.where(diff == 0, 0.0, diff / np.maximum(scale, 1e-30))


@contextlib.contextmanager
def _tf32_stays_off() -> Iterator[None]:
    """``_setup`` calls ``configure_device``, which turns TF32 on; wrap it so that the
    comparison's GPU run keeps TF32 off from its first step."""
    real = tr.configure_device

    def configure(device: torch.device, cfg: Any) -> None:
        real(device, cfg)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False

    tr.configure_device = configure
    try:
        yield
    finally:
        tr.configure_device = real


def check_case(report: Report, case: dict[str, Any], ref: dict[str, Any] | None, st: Settings) -> None:
    """Pass / fail lines of one training case (``ref``: the fp32 eager case of its model)."""
    label = f"{case['model']} {case['combo']}"
    loss = np.asarray(case["losses"]["loss"])
    finite = bool(np.isfinite(np.asarray([case["losses"][m] for m in tr.METRICS])).all())
    first, last = _quarter_means(loss)
    report.check(f"losses fall {label}", finite and last <= (1 - st.min_fall) * first,
                 f"mean loss first quarter {first:.6g} -> last quarter {last:.6g} "
                 f"(x{last / first:.3f}; must be <= x{1 - st.min_fall:g}, all finite: {finite})")
    if case["wanted_bf16"]:
        report.check(f"bf16 on {label}", case["bf16"], f"bf16 autocast active: {case['bf16']}")
        if ref is not None:
            n = st.bf16_steps
            step_rel = float(_rel(loss[:n], ref["losses"]["loss"][:n]).max())
            _, ref_last = _quarter_means(np.asarray(ref["losses"]["loss"]))
            tail_rel = float(abs(last - ref_last) / abs(ref_last))
            case["bf16_vs_fp32"] = {"first_steps_max_rel": step_rel, "last_quarter_rel": tail_rel}
            report.check(f"bf16 band {label}",
                         step_rel <= st.bf16_step_rtol and tail_rel <= st.bf16_tail_rtol,
                         f"vs fp32 eager: first {n} steps max rel {step_rel:.2e} (<= {st.bf16_step_rtol:g}), "
                         f"last-quarter mean rel {tail_rel:.2e} (<= {st.bf16_tail_rtol:g})")
    if case["compile_requested"]:
        report.check(f"compiled {label}", case["compiled"] and case["compiled_to_the_end"],
                     f"torch.compile ({st.compile_backend}) succeeded: {case['compiled']}, "
                     f"still compiled after the run (no eager fallback): {case['compiled_to_the_end']}")


# --------------------------------------------------------------------------- inference


def inference_case(name: str, data_dev: torch.Tensor, mask: np.ndarray, st: Settings,
                   device: torch.device) -> dict[str, Any]:
    """Encode and decode ``st.n_encode`` patterns (already on ``device``) with the
    functions the encode and decode stages call, at their config batch sizes."""
    t_case = time.perf_counter()
    variant = MODELS[name]
    cfg = training_settings(st, False, False, st.batch_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(st.seed)
        model = models.build_from_training(variant, mask.shape, cfg)  # untrained: the cost is the same
    enc, dec = model.encoder.to(device), model.decoder.to(device)
    mask_dev = torch.from_numpy(mask).to(device)
    n = len(data_dev)
    out: dict[str, Any] = {"model": name, "n": n, "encode_batch": st.encode_batch, "decode_batch": st.decode_batch}

    def timed(fn: Any) -> tuple[Any, float]:
        _sync(device)
        t0 = time.perf_counter()
        res = fn()
        _sync(device)
        return res, time.perf_counter() - t0

    warm = data_dev[:2 * st.encode_batch]
    models.encode_patterns(enc, warm, st.encode_batch, device, mask_dev)  # allocator, cuDNN
    _free(device)
    (mean, logvar), sec = timed(partial(models.encode_patterns, enc, data_dev, st.encode_batch, device, mask_dev))
    out.update(encode_s=sec, encode_patterns_per_s=n / sec, encode_peak_gpu_memory_mib=_peak_mib(device))
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16):
        models.encode_patterns(enc, warm, st.encode_batch, device, mask_dev)
        (mean16, _), sec = timed(partial(models.encode_patterns, enc, data_dev, st.encode_batch, device, mask_dev))
    out.update(encode_bf16_s=sec, encode_bf16_patterns_per_s=n / sec,
               encode_bf16_max_abs_diff_of_mean=float(np.abs(mean16 - mean).max()))
    z = torch.from_numpy(mean).to(device)
    models.decode_latents(dec, z[:2 * st.decode_batch], st.decode_batch, device)
    _free(device)
    decoded, sec = timed(partial(models.decode_latents, dec, z, st.decode_batch, device))
    out.update(decode_s=sec, decode_patterns_per_s=n / sec, decode_peak_gpu_memory_mib=_peak_mib(device))
    out["outputs_ok"] = bool(
        mean.shape == (n, variant["latent_dim"]) and np.isfinite(mean).all() and np.isfinite(logvar).all()
        # min / max: no temporary copy of the 100k patterns; a NaN fails the comparison
        and decoded.shape == (n, *mask.shape) and float(decoded.min()) >= -1.0
        and float(decoded.max()) <= 1.0)
    del decoded, z, mean, logvar, mean16, enc, dec, model
    out["case_s"] = time.perf_counter() - t_case
    return out


# --------------------------------------------------------------------------- output


def _fmt(v: Any, spec: str = ",.0f") -> str:
    if v is None:
        return "-"
    if isinstance(v, float) and not math.isfinite(v):
        return "nan"
    return format(v, spec)


def markdown(report: Report) -> str:
    st, env = report.settings, report.environment
    lines = [
        f"# GPU check ({st['mode']} mode)", "",
        f"Device: {env['device_name']}; torch {env['torch']}, CUDA {env['cuda']}, cuDNN {env['cudnn']}; "
        f"{st['size']} x {st['size']} patterns, width factor {st['width_factor']:g}, batch {st['batch_size']}, "
        f"Adam lr {PAPER_LEARNING_RATE:g} with a {st['lr_warmup']}-step warm-up and gradient-norm "
        f"clipping at {st['training']['grad_clip_norm']:g}; "
        f"{st['warmup_steps']} warm-up + {st['steps']} timed steps per case; "
        f"total {report.environment.get('elapsed_s', 0):.0f} s.", "",
        "## Training", "",
        "| model | precision | compiled | patterns/s | ms/step | peak GPU MiB | 250 epochs x 76.8k (h) "
        "| x paper | compile s | case s | lr | loss first -> last quarter |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in report.cases:
        paper_rate = PAPER_EPOCHS * PAPER_TRAIN_PATTERNS / (PAPER_HOURS[MODELS[c["model"]]["loss"]] * 3600)
        lines.append(
            f"| {c['model']} | {'bf16' if c['bf16'] else 'fp32'} | {'yes' if c['compiled'] else 'no'} | "
            f"{_fmt(c['patterns_per_s'])} | {_fmt(c['ms_per_step'], '.1f')} | {_fmt(c['peak_gpu_memory_mib'])} | "
            f"{_fmt(c['paper_projection_h'], '.2f')} | {_fmt(c['patterns_per_s'] / paper_rate, '.2f')} | "
            f"{_fmt(c['compile_s'], '.1f')} | {_fmt(c['case_s'], '.1f')} | {c['learning_rate']:g} | "
            "{:.5g} -> {:.5g} |".format(*_quarter_means(np.asarray(c["losses"]["loss"]))))
    lines += ["", "## Encode / decode (the stages' functions)", "",
              f"{st['n_encode']:,} patterns from device memory; encode batch {st['encode_batch']} "
              f"(`maps.batch_size`), decode batch {st['decode_batch']} (`evaluation.decode_batch_size`); "
              "fp32 as the stages run (bf16: autocast, information only).", "",
              f"| model | encode patterns/s | >= {ENCODE_GOAL // 1000}k goal | encode bf16 patterns/s | "
              "decode patterns/s | peak GPU MiB (enc / dec) | case s |",
              "|---|---|---|---|---|---|---|"]
    for r in report.inference:
        lines.append(
            f"| {r['model']} | {_fmt(r['encode_patterns_per_s'])} | "
            f"{'met' if r['encode_patterns_per_s'] >= ENCODE_GOAL else 'not met'} | "
            f"{_fmt(r['encode_bf16_patterns_per_s'])} | {_fmt(r['decode_patterns_per_s'])} | "
            f"{_fmt(r['encode_peak_gpu_memory_mib'])} / {_fmt(r['decode_peak_gpu_memory_mib'])} | "
            f"{_fmt(r['case_s'], '.1f')} |")
    lines += ["", "## Device comparison", "",
              "| model | what | steps | max rel diff | tolerance |", "|---|---|---|---|---|"]
    for c in report.comparisons:
        lines.append(f"| {c['model']} | {c['what']} | {c['steps']} | {c['max_rel_diff']:.2e} | "
                     f"{'bit-identical' if c['rtol'] == 0 else format(c['rtol'], 'g')} |")
    n_fail = sum(not c["passed"] for c in report.checks)
    lines += ["", f"## Checks: {len(report.checks) - n_fail} passed, {n_fail} failed", ""]
    lines += [f"- {'PASS' if c['passed'] else '**FAIL**'} {c['name']}: {c['detail']}" for c in report.checks]
    if report.goals:
        lines += ["", "## Goals (reported, not checks)", ""]
        lines += [f"- {'met' if g['met'] else 'not met'}: {g['name']} ({g['detail']})" for g in report.goals]
    if report.probes:
        import paper_lr

        lines += ["", f"## The paper's learning rate ({PAPER_LEARNING_RATE:g}), without and with our "
                  "stabilisers (`benchmarks/paper_lr.py`)", "", paper_lr.markdown(report.probes)]
    if report.skipped:
        lines += ["", "Skipped (time budget): " + ", ".join(report.skipped)]
    return "\n".join(lines) + "\n"


def environment(device: torch.device) -> dict[str, Any]:
    env = {
        "device_type": device.type,
        "device_name": (torch.cuda.get_device_name(device) if device.type == "cuda"
                        else f"CPU {platform.processor() or platform.machine()}, {os.cpu_count()} cores, no GPU used"),
        "torch": str(torch.__version__), "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
        "python": platform.python_version(), "platform": platform.platform(), "cpu_count": os.cpu_count(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(capability=f"{props.major}.{props.minor}", gpu_memory_gib=props.total_memory / 2**30,
                   bf16_native=bool(torch.cuda.is_bf16_supported(including_emulation=False)))
        with contextlib.suppress(Exception):
            import triton
            env["triton"] = triton.__version__
    return env


# --------------------------------------------------------------------------- main


def settings_from_args(args: argparse.Namespace) -> Settings:
    cpu = bool(args.cpu_mode)

    def pick(given: Any, gpu_default: Any, cpu_default: Any) -> Any:
        return given if given is not None else (cpu_default if cpu else gpu_default)

    return Settings(
        mode="cpu" if cpu else "gpu",
        size=pick(args.size, 120, 32),
        width_factor=pick(args.width_factor, 1.0, 0.125),
        batch_size=pick(args.batch_size, 256, 16),
        lr_warmup=pick(args.lr_warmup, 20, 2),
        paper_lr_steps=pick(args.paper_lr_steps, 400, 6),
        paper_lr_warmup=pick(args.paper_lr_warmup, 100, 2),
        warmup_steps=pick(args.warmup_steps, 5, 2),
        steps=pick(args.steps, 50, 10),
        n_train=pick(args.n_train, 2048, 64),
        compare_batch=pick(args.compare_batch, 8, 8),
        compare_steps=pick(args.compare_steps, 4, 4),
        compare_n_train=pick(args.compare_n_train, 64, 32),
        n_encode=pick(args.n_encode, 100_000, 1_000),
        encode_batch=int(section("maps")["batch_size"]),
        decode_batch=int(section("evaluation")["decode_batch_size"]),
        threads=pick(args.threads, os.cpu_count() or 1, min(2, os.cpu_count() or 1)),
        seed=int(args.seed),
        compile_backend=pick(args.compile_backend, "inductor", "eager"),
        budget_s=float(pick(args.budget_s, 320.0, 300.0)),
        models=[m for m in args.models.split(",") if m],
        combos=[c for c in args.combos.split(",") if c],
        device_rtol=DEVICE_RTOL if not cpu else 0.0,
    )


def inference(report: Report, train_np: np.ndarray, mask: np.ndarray, st: Settings,
              device: torch.device, job_flags: tuple[bool, bool, bool], over_budget: Any,
              elapsed: Any, last_s: dict[str, float]) -> None:
    """Encode / decode every model, with the torch flags of the encode / decode jobs."""
    saved = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
             torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = job_flags
    report.settings["inference_torch_flags"] = {
        "cudnn.benchmark": job_flags[0], "cudnn.allow_tf32": job_flags[1], "matmul.allow_tf32": job_flags[2]}
    print("encode / decode:", flush=True)
    _free(device)
    try:
        if not st.models:
            return
        base = torch.from_numpy(train_np[:st.n_train]).to(device)
        data_dev = base[torch.arange(st.n_encode, device=device) % len(base)]
        del base
        for name in st.models:
            if over_budget(f"encode/decode {name}", "inference"):
                continue
            r = inference_case(name, data_dev, mask, st, device)
            report.inference.append(r)
            last_s["inference"] = r["case_s"]
            print(f"[{elapsed():6.1f} s] {name}: encode {r['encode_patterns_per_s']:,.0f} patterns/s "
                  f"(bf16 {r['encode_bf16_patterns_per_s']:,.0f}), decode {r['decode_patterns_per_s']:,.0f} "
                  f"patterns/s (case {r['case_s']:.1f} s)", flush=True)
            report.check(f"encode/decode outputs {name}", r["outputs_ok"],
                         f"{r['n']:,} latents (N, {MODELS[name]['latent_dim']}) and patterns finite, "
                         "decoded in [-1, 1]")
            report.goals.append({
                "name": f"encode >= {ENCODE_GOAL:,} patterns/s, {name}",
                "met": r["encode_patterns_per_s"] >= ENCODE_GOAL,
                "detail": f"{r['encode_patterns_per_s']:,.0f} patterns/s fp32 (the encode stage), "
                          f"{r['encode_bf16_patterns_per_s']:,.0f} with bf16 autocast"})
        del data_dev
    finally:
        torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
        _free(device)


def run(st: Settings, out_dir: Path) -> Report:
    t_start = time.perf_counter()
    device = torch.device("cuda" if st.mode == "gpu" else "cpu")
    # the encode / decode jobs never call configure_device: keep the process's defaults
    job_flags = (torch.backends.cudnn.benchmark, torch.backends.cudnn.allow_tf32,
                 torch.backends.cuda.matmul.allow_tf32)
    report = Report(settings=asdict(st), environment=environment(device))
    report.settings["training"] = training_settings(st, True, True, st.batch_size)
    report.settings["tolerances"] = {
        "device_rtol": st.device_rtol, "bf16_step_rtol": st.bf16_step_rtol,
        "bf16_tail_rtol": st.bf16_tail_rtol, "bf16_steps": st.bf16_steps, "min_fall": st.min_fall}
    env = report.environment
    print(f"device: {env['device_name']}; torch {env['torch']}, CUDA {env['cuda']}; mode {st.mode}; "
          f"budget {st.budget_s:.0f} s", flush=True)

    def elapsed() -> float:
        return time.perf_counter() - t_start

    last_s: dict[str, float] = {}  # duration of the last part of each kind

    def over_budget(what: str, kind: str = "") -> bool:
        """Skip a part that would end after the budget (judged by the last part of its
        kind; the first compiled case is the one unknown)."""
        expect = last_s.get(kind, 0.0)
        if elapsed() + expect > st.budget_s:
            report.skipped.append(what)
            print(f"[{elapsed():6.1f} s] SKIP {what}: would end after the {st.budget_s:.0f} s budget "
                  f"(a part like it took {expect:.0f} s)", flush=True)
            return True
        return False

    t0 = time.perf_counter()
    n_data = max(st.n_train, st.compare_n_train)
    train_np = synthetic_patterns(n_data, st.size, st.seed)
    mask = screen_mask(st.size)
    data = (train_np[:st.n_train], train_np[:0], mask)
    print(f"[{elapsed():6.1f} s] synthetic set: {n_data} x {st.size} x {st.size} "
          f"({time.perf_counter() - t0:.1f} s)", flush=True)

    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        workdir = Path(tmp)
        print("device comparison:", flush=True)
        for name in st.models:
            if not over_budget(f"device comparison {name}", "compare"):
                compare_devices(report, (train_np, train_np[:0], mask), name, st, workdir)
                last_s["compare"] = report.comparisons[-1]["seconds"]
                print(f"[{elapsed():6.1f} s] {name} compared ({report.comparisons[-1]['seconds']:.1f} s)", flush=True)

        # Priority order, so that a slow compilation (the one unknown of a first GPU
        # run) can only cost the compiled cases: eager training, encode / decode, compiled.
        eager = [c for c in st.combos if not COMBOS[c][1]]
        compiled = [c for c in st.combos if COMBOS[c][1]]
        refs: dict[str, dict[str, Any]] = {}

        def training(combos: list[str]) -> None:
            for name in st.models:
                for combo in combos:
                    kind = "compiled" if COMBOS[combo][1] else "eager"
                    if over_budget(f"{name} {combo}", kind):
                        continue
                    bf16, compile_ = COMBOS[combo]
                    _free(device)
                    cfg = training_settings(st, bf16, compile_, st.batch_size)
                    case = train_case(data, MODELS[name], cfg, st, st.mode == "gpu", st.warmup_steps,
                                      st.steps, workdir, force_amp=bf16 if st.mode == "cpu" else None)
                    case.update(model=name, combo=combo, wanted_bf16=bf16)
                    report.cases.append(case)
                    last_s[kind] = case["case_s"]
                    print(f"[{elapsed():6.1f} s] {name} {combo}: {case['patterns_per_s']:,.0f} patterns/s, "
                          f"{case['ms_per_step']:.1f} ms/step, peak {_fmt(case['peak_gpu_memory_mib'])} MiB, "
                          f"compile {case['compile_s']:.1f} s (case {case['case_s']:.1f} s)", flush=True)
                    if combo == "fp32-eager":
                        refs[name] = case
                    check_case(report, case, refs.get(name) if combo != "fp32-eager" else None, st)

        print("training, eager:", flush=True)
        training(eager)
        import paper_lr  # beside this file; it imports the synthetic set from here

        paper_names = [m for m in PAPER_LR_MODELS if m in st.models]
        if paper_names and st.paper_lr_steps and not over_budget("paper learning rate", "paper_lr"):
            t0 = time.perf_counter()
            rows = paper_lr.probe(paper_names, st.batch_size, st.paper_lr_steps, st.paper_lr_warmup,
                                  device.type, st.threads, st.n_train, st.seed, st.size, st.width_factor)
            last_s["paper_lr"] = time.perf_counter() - t0
            report.probes.extend(rows)
            for r in rows:
                if r["run"] != "paper + ours":
                    continue
                finite = r["first_non_finite_step"] is None
                report.check(f"paper lr trains {r['model']}",
                             r["diverged_step"] is None
                             and r["last_quarter_loss"] <= (1 - st.min_fall) * r["first_quarter_loss"],
                             f"lr {PAPER_LEARNING_RATE:g}, batch {r['batch']}, {r['warmup']}-step warm-up, clip "
                             f"{r['clip']:g}, layer rates above fan-in {r['fan_in_ref']}: {r['steps']} steps, "
                             f"all finite: {finite}, diverged: {r['diverged_step'] or 'no'}, loss "
                             f"{r['first_quarter_loss']:.5g} -> {r['last_quarter_loss']:.5g}")
        inference(report, train_np, mask, st, device, job_flags, over_budget, elapsed, last_s)
        if compiled:
            print("training, compiled:", flush=True)
            training(compiled)
    order = {(m, c): i for i, (m, c) in enumerate((m, c) for m in st.models for c in st.combos)}
    report.cases.sort(key=lambda c: order[c["model"], c["combo"]])
    expected = len(st.models) * (2 + len(st.combos))
    done = len(report.comparisons) + len(report.cases) + len(report.inference)
    report.check("everything ran within the budget", not report.skipped and done == expected,
                 f"{done} of {expected} parts in {elapsed():.0f} s (budget {st.budget_s:.0f} s)"
                 + (f"; skipped: {', '.join(report.skipped)}" if report.skipped else ""))
    report.environment["elapsed_s"] = elapsed()

    out_dir.mkdir(parents=True, exist_ok=True)
    doc = {"format": FORMAT, "passed": all(c["passed"] for c in report.checks), **asdict(report)}
    (out_dir / "gpu_check.json").write_text(json.dumps(doc, indent=1, default=float) + "\n")
    md = markdown(report)
    (out_dir / "gpu_check.md").write_text(md)
    print()
    print(md)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("results/gpu_check"), help="output folder")
    parser.add_argument("--cpu-mode", "--tiny", dest="cpu_mode", action="store_true",
                        help="tiny sizes on the CPU (the test suite's run)")
    parser.add_argument("--models", default=",".join(MODELS), help=f"subset of {','.join(MODELS)}")
    parser.add_argument("--combos", default=",".join(DEFAULT_COMBOS), help=f"subset of {','.join(COMBOS)}")
    parser.add_argument("--budget-s", type=float, default=None,
                        help="skip a part that would end after this many seconds (GPU 320, CPU 300: a loaded 2-core CI machine)")
    for flag, kind in (("--size", int), ("--width-factor", float), ("--batch-size", int),
                       ("--warmup-steps", int), ("--steps", int), ("--n-train", int),
                       ("--compare-batch", int), ("--compare-steps", int), ("--compare-n-train", int),
                       ("--n-encode", int), ("--threads", int)):
        parser.add_argument(flag, type=kind, default=None, help="override the mode's default")
    parser.add_argument("--compile-backend", default=None, help="GPU: inductor; CPU mode: eager")
    for flag, what in (("--lr-warmup", "learning-rate warm-up of the cases (GPU 20, CPU 2)"),
                       ("--paper-lr-steps", "steps of the paper-lr runs (GPU 400, CPU 6; 0 = skip)"),
                       ("--paper-lr-warmup", "their warm-up (GPU 100, CPU 2)")):
        parser.add_argument(flag, type=int, default=None, help=what)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    st = settings_from_args(args)
    unknown = [m for m in st.models if m not in MODELS] + [c for c in st.combos if c not in COMBOS]
    if unknown:
        parser.error(f"unknown model / combination: {', '.join(unknown)}")
    if st.mode == "gpu" and not torch.cuda.is_available():
        print(f"no usable GPU (torch {torch.__version__}, CUDA build {torch.version.cuda}); "
              "run with --cpu-mode for the CPU check", file=sys.stderr)
        return 2
    report = run(st, args.out)
    failed = [c["name"] for c in report.checks if not c["passed"]]
    print(f"{len(report.checks) - len(failed)} checks passed, {len(failed)} failed"
          + (f": {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
