"""Train one VAE variant: resumable, seeded, CPU or GPU; losses to CSV and plots.

Entry point for the workflow: :func:`train_variant`. Later stages rebuild a trained
model from its weights file alone with :func:`latentebsd.io.weights.load_model`.

Loss (per batch, means over the batch's patterns)
-------------------------------------------------
- ``vae`` / ``beta_vae``: ``L2 + beta * KL`` with ``L2`` the per-pattern sum of squared
  errors over the detector-screen mask, expressed per 120 x 120 pattern
  (:func:`latentebsd.models.l2_scale`: x4 at 60 x 60, x1 at the paper's size), and
  ``KL`` the per-pattern KL to N(0, I).
- ``contrastive``: two augmented views of the batch go through the shared network;
  ``sum over views (L2(view reconstruction, un-augmented pattern) + beta * KL(view))
  + weight * NT-Xent(projection(mean_1), projection(mean_2))``. The logged L2 and KL
  are the means over the two views (as the paper plots them).
- Optional KL schedule (off in the paper): KL weight 0 for ``kl_hold_epochs``, then a
  linear ramp up to beta over ``kl_warmup_epochs``. Short CPU demo runs need it (see
  :func:`kl_weight`).

Stabilisers (ours, not the paper's; why: :func:`learning_rate`)
---------------------------------------------------------------
Adam at the paper's learning rate (1e-3) diverges at Table 2 widths: its first steps
move every weight by ~lr whatever the gradient's size, which at fan-ins of 2,500 -
16,000 (Glorot weights ~0.01) is a ~10 % coherent change of every layer's gain,
compounding through the encoder into jumps of the latent mean and log-variance
(KL -> inf, then NaN). Two settings keep the paper's optimiser (lr, betas, batch,
epochs) and make it train: ``lr_fan_in_ref`` (the paper's rate for layers of up to that
many inputs, proportionally less for wider ones: :func:`layer_rate_groups`),
``lr_warmup_steps`` (a linear learning-rate warm-up from 0, :func:`learning_rate`) and
``grad_clip_norm`` (the global gradient norm clipped before each Adam step, so a loss
spike cannot make a 3-lr step and inflate Adam's second moments). All three are in the
fingerprint of a checkpoint.

Determinism and resume
----------------------
Initialisation comes from ``seed``; shuffling from a CPU generator and every
in-step draw (sampling epsilon, augmentations) from a generator on the training
device, both seeded from ``seed`` and saved in the checkpoint at the end of every
epoch, together with the model, the Adam state and the loss log. Validation uses its
own generator re-seeded from ``(seed, epoch)``, so it never shifts the training
stream. A re-run after a kill resumes from the last complete epoch and, on CPU with
the same thread count, ends bit-identical to an uninterrupted run.

On CUDA (when asked for) training keeps the data on the GPU, runs in channels-last
layout under bf16 autocast (losses in float32) and compiles encoder and decoder with
``torch.compile`` (falling back to eager mode if compilation fails).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from latentebsd.io.atomic import atomic_path
from latentebsd.io.sample import read_sample
from latentebsd.io.weights import save_weights
from latentebsd.models import (
    VAE,
    augment,
    build_from_training,
    effective_width,
    fan_in,
    kl_divergence,
    l2_scale,
    masked_l2,
    nt_xent,
    reparameterize,
)
from latentebsd.plotting import pyplot, save_figure
from latentebsd.variants import variant_beta, variant_label
from latentebsd.workflow import job_device

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "latentebsd.checkpoint/1"
METRICS = ("l2", "kl", "contrastive", "loss")
CSV_COLUMNS = ("iteration", "epoch", "level", "split", "n", *METRICS)

# Keys that change neither the trajectory nor the result; everything else must match
# for a checkpoint to be resumed.
_NON_TRAJECTORY_KEYS = ("epochs", "eval_batch_size", "smoothing_window", "keep_checkpoint", "compile",
                        "data_on_device")


# --------------------------------------------------------------------------- schedule


def kl_weight(step: int, hold: float, ramp: float) -> float:
    """Fraction of beta applied at optimizer step ``step`` (0-based) of a KL schedule.

    0 for the first ``hold`` steps, then a linear ramp to 1 over ``ramp`` steps. Off in
    the paper (hold = ramp = 0 gives 1 throughout). Short runs need it: the decoder sits
    on the mean pattern for hundreds of steps before it uses z, and a KL active during
    that plateau collapses the posterior (for beta = 15, 50 for good within a demo run).
    """
    if step < hold:
        return 0.0
    if ramp <= 0:
        return 1.0
    return min(1.0, (step - hold + 1) / ramp)


def learning_rate(step: int, peak: float, warmup_steps: int) -> float:
    """Adam's learning rate at optimizer step ``step`` (0-based): a linear warm-up from
    ``peak / warmup_steps`` to ``peak`` over the first ``warmup_steps`` steps, then
    ``peak`` (the paper's constant 1e-3). ``warmup_steps = 0``: ``peak`` throughout.

    Why: Adam's update is ``m / sqrt(v)``, about ``lr`` per weight in the first steps
    whatever the gradient, because ``v`` has not yet learned the gradients' scale; a
    warm-up of ``2 / (1 - beta2)`` steps (2,000 for beta2 = 0.999; Ma & Yarats 2021,
    "On the adequacy of untuned warmup for adaptive optimization") covers that phase.
    Measured (``benchmarks/paper_lr.py``): d = 128 at Table 2 width, lr 1e-3, no warm-up
    - the latent log-variance jumps from +-0.1 to -16 in one step and the loss is
    non-finite by step 37 (batch 8, CPU); with the warm-up and :func:`clip_gradients`
    the same steps stay finite and the loss falls.
    """
    if warmup_steps <= 0:
        return float(peak)
    return float(peak) * min(1.0, (int(step) + 1) / float(warmup_steps))


def layer_rate_groups(model: torch.nn.Module, fan_in_ref: float | None) -> list[dict[str, Any]]:
    """Adam parameter groups with a learning-rate factor per layer (``lr_scale``):
    ``min(1, fan_in_ref / fan-in)`` of the layer (:func:`latentebsd.models.fan_in`), its
    bias with it; ``fan_in_ref = None``: one group, factor 1 (the paper's optimiser).

    Why: Adam moves every weight by about the learning rate whatever its gradient, so
    one step changes a layer's output by ~lr x fan-in of its scale when the steps of its
    weights agree in sign - as they do early in training. Layers of up to ~2,600 inputs
    (Table 2 at d <= 32: 9 x 9 x 32) train at the paper's 1e-3; the wider layers of
    d = 128 / 256 (10,368 / 20,736 inputs) jumped by ~10 - 20 x their scale and the run
    diverged (H200, batch 256: d = 256 non-finite at step 82 even with a 100-step
    warm-up and clipping; ``benchmarks/paper_lr.py``). Scaling a layer's rate by 1 /
    fan-in beyond a reference width is the muP rule for Adam (Yang et al. 2022,
    "Tensor Programs V"): every layer then changes its output by the same relative
    amount per step, at every d.
    """
    if fan_in_ref is None:
        return [{"params": [p for p in model.parameters() if p.requires_grad], "lr_scale": 1.0}]
    by_scale: dict[float, list[torch.nn.Parameter]] = {}
    owned: set[int] = set()
    for m in model.modules():
        if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            scale = min(1.0, float(fan_in_ref) / fan_in(m))
            for p in m.parameters(recurse=False):
                if p.requires_grad and id(p) not in owned:
                    owned.add(id(p))
                    by_scale.setdefault(scale, []).append(p)
    rest = [p for p in model.parameters() if p.requires_grad and id(p) not in owned]
    if rest:
        by_scale.setdefault(1.0, []).extend(rest)
    return [{"params": params, "lr_scale": scale} for scale, params in sorted(by_scale.items())]


def clip_gradients(model: torch.nn.Module, max_norm: float | None) -> torch.Tensor | None:
    """Scale all gradients of ``model`` so that their global L2 norm is at most
    ``max_norm`` (``None``: leave them); returns the norm before clipping, on the
    gradients' device, without a host sync.

    ``max_norm`` is in the units of the training loss: per-pattern L2 per 120 x 120
    pattern (:func:`latentebsd.models.l2_scale`) + KL, averaged over the batch, where
    gradient norms are ~3e3 - 1.5e4 in the first hundred steps of Table 2 models
    (Glorot) and fall as the model learns: the schema's 1,000 caps the first steps and
    every later spike, and leaves the converged phase alone.
    """
    if max_norm is None:
        return None
    return torch.nn.utils.clip_grad_norm_(model.parameters(), float(max_norm), foreach=True)


#: ``training.compile: auto`` compiles a run of at least this many optimizer steps.
COMPILE_MIN_STEPS = 10_000


def compile_wanted(cfg: Mapping[str, Any], n_train: int) -> bool:
    """Whether a CUDA run compiles encoder and decoder (``training.compile``).

    ``auto`` (the default) compiles only where it pays back: compilation costs 10 - 45 s
    per model and saved ~7 % of a Table 2 model's step on an H200 (vae128 bf16 10.6k ->
    11.3k patterns/s; vae16, bound by kernel launches, got slower: 18.0k -> 15.6k), so
    it pays only on long runs - the paper's 75,000 steps, not the embedded default's
    2,400 (where it took 25 - 45 s of a 60 s job) or the GPU overlay's few thousand.
    """
    mode = cfg["compile"]
    if mode == "auto":
        steps = int(cfg["epochs"]) * math.ceil(int(n_train) / int(cfg["batch_size"]))
        return steps >= COMPILE_MIN_STEPS
    return bool(mode)


def _seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from one (numpy's SeedSequence)."""
    state = np.random.SeedSequence(int(seed)).generate_state(2 * n, dtype=np.uint32)
    return [int(state[2 * i]) << 31 ^ int(state[2 * i + 1]) for i in range(n)]


# --------------------------------------------------------------------------- data


def _data_fingerprint(train: np.ndarray, val: np.ndarray, mask: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (train, val, mask):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- steps


def use_bf16(device: torch.device, cfg: Mapping[str, Any]) -> bool:
    """bf16 autocast: asked for (``training.bf16``), on CUDA, and native on this GPU
    (emulated bf16 on older cards is slower than float32)."""
    if device.type != "cuda" or not cfg["bf16"]:
        return False
    if not torch.cuda.is_bf16_supported(including_emulation=False):
        log.warning("training.bf16: this GPU has no native bf16; training in float32")
        return False
    return True


def configure_device(device: torch.device, cfg: Mapping[str, Any]) -> None:
    """Process-wide torch settings of a training run (also used by the benchmarks).

    CPU: flush denormals (a collapsing KL drives activations into denormals, which made
    CPU epochs 20x slower; flushing them is deterministic). CUDA: TF32 matmuls and
    convolutions; cuDNN autotuning unless ``training.deterministic``, which instead
    asks for deterministic algorithms everywhere.
    """
    if device.type == "cpu":
        torch.set_flush_denormal(True)
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    deterministic = bool(cfg.get("deterministic", False))
    torch.backends.cudnn.benchmark = not deterministic
    torch.backends.cudnn.deterministic = deterministic
    if deterministic:
        # cuBLAS needs a fixed workspace for deterministic results (before it starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True)


class _EagerFallback:
    """A compiled module that falls back to its eager twin for good on any failure
    (a recompilation for an unforeseen shape, a broken toolchain): results are the same."""

    def __init__(self, compiled: Callable, eager: torch.nn.Module, name: str) -> None:
        self.compiled, self.eager, self.name = compiled, eager, name

    def __call__(self, *args: Any) -> Any:
        if self.compiled is not None:
            try:
                return self.compiled(*args)
            except Exception as exc:  # pragma: no cover - depends on the CUDA toolchain
                log.warning("torch.compile of the %s failed mid-training (%s); eager from now on",
                            self.name, exc)
                self.compiled = None
        return self.eager(*args)


class _Runner:
    """The callables a step needs: maybe-compiled encoder / decoder, the projection."""

    def __init__(self, model: VAE, device: torch.device, cfg: dict[str, Any],
                 amp: bool | None = None) -> None:
        self.model = model
        self.device = device
        self.amp = use_bf16(device, cfg) if amp is None else amp
        self.channels_last = bool(cfg["channels_last"])
        self.encode: Callable = model.encoder
        self.decode: Callable = model.decoder
        self.l2_scale = l2_scale(model.encoder.pattern_shape)

    def try_compile(self, mask: torch.Tensor, shapes: Sequence[tuple[int, bool]],
                    backend: str = "inductor") -> bool:
        """Compile encoder and decoder and warm them up at every ``(batch size, grad)``
        a run uses (:func:`compile_shapes`), so that training never recompiles; on any
        failure keep eager mode (results are the same). Returns whether compiled."""
        # static shapes: one graph per (batch size, grad mode) of compile_shapes, no
        # dynamic-shape recompilation in the first epoch (at most 6 graphs each)
        enc = torch.compile(self.model.encoder, backend=backend, dynamic=False)
        dec = torch.compile(self.model.decoder, backend=backend, dynamic=False)
        try:
            # Warm-up on zeros: consumes no generator state, grads are discarded; a
            # failing toolchain shows here, not mid-training.
            for n, grad in shapes:
                x = torch.zeros((n, *mask.shape), device=self.device)
                with torch.set_grad_enabled(grad), self.autocast():
                    mean, _ = enc(self._layout(x))
                    # contiguous, as the sampled z of a step (the mean is a strided view)
                    out = dec(mean.float().contiguous()).float().sum()
                if grad:
                    out.backward()
        except Exception as exc:  # pragma: no cover - depends on the CUDA toolchain
            log.warning("torch.compile failed (%s); training in eager mode", exc)
            return False
        finally:
            self.model.zero_grad(set_to_none=True)
        self.encode = _EagerFallback(enc, self.model.encoder, "encoder")
        self.decode = _EagerFallback(dec, self.model.decoder, "decoder")
        return True

    def autocast(self) -> torch.autocast:
        return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16, enabled=self.amp)

    def _layout(self, x: torch.Tensor) -> torch.Tensor:
        x = x.unsqueeze(1)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def vae_terms(
        self, x_in: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, gen: torch.Generator
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-pattern L2 (per 120 x 120 pattern) and KL, and the latent means, for ``x_in``."""
        mean, logvar = self.encode(self._layout(x_in))
        recon = self.decode(reparameterize(mean.float(), logvar.float(), gen))
        return self.l2_scale * masked_l2(recon, target, mask), kl_divergence(mean, logvar), mean


def _batch_losses(
    runner: _Runner, x: torch.Tensor, mask: torch.Tensor, variant: dict[str, Any], beta: float,
    ccfg: dict[str, Any], gen: torch.Generator,
) -> dict[str, torch.Tensor]:
    """Loss terms of one batch ``x`` (N, h, w); all scalars, float32."""
    x = torch.where(mask, x, 0.0)  # pixels off the screen never reach the network
    if variant["loss"] != "contrastive":
        with runner.autocast():
            l2, kl, _ = runner.vae_terms(x, x, mask, gen)
        l2, kl = l2.mean(), kl.mean()
        zero = torch.zeros((), device=x.device)
        return {"l2": l2, "kl": kl, "contrastive": zero, "loss": l2 + beta * kl}
    aug = dict(
        salt_pepper=float(ccfg["salt_pepper"]), gaussian_sigma=float(ccfg["gaussian_sigma"]),
        gamma_range=tuple(ccfg["gamma_range"]),
    )
    n = x.shape[0]
    views = torch.cat([augment(x, mask, gen, **aug), augment(x, mask, gen, **aug)])
    with runner.autocast():
        l2, kl, mean = runner.vae_terms(views, torch.cat([x, x]), mask, gen)
        proj = runner.model.projection(mean)
    con = nt_xent(proj[:n], proj[n:], float(ccfg["temperature"]))
    # Sum over the two views of (L2 + beta KL) = 2 x their means.
    loss = 2.0 * (l2.mean() + beta * kl.mean()) + float(ccfg["weight"]) * con
    return {"l2": l2.mean(), "kl": kl.mean(), "contrastive": con, "loss": loss}


@torch.no_grad()
def _evaluate(
    runner: _Runner, data: torch.Tensor, mask: torch.Tensor, variant: dict[str, Any], beta: float,
    ccfg: dict[str, Any], seed: int, batch_size: int,
) -> dict[str, float]:
    """Pattern-weighted means of the loss terms over ``data`` (model in eval mode)."""
    gen = torch.Generator(device=mask.device).manual_seed(seed)
    sums = torch.zeros(len(METRICS), dtype=torch.float64, device=mask.device)
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size].to(mask.device, non_blocking=True)
        terms = _batch_losses(runner, x, mask, variant, beta, ccfg, gen)
        sums += torch.stack([terms[m].double() for m in METRICS]) * len(x)
    values = (sums / max(len(data), 1)).cpu().tolist()
    return dict(zip(METRICS, values))


# --------------------------------------------------------------------------- checkpoint


def _save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    """Write atomically: a kill mid-write leaves the previous checkpoint intact."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def _load_checkpoint(path: Path, fingerprint: dict[str, Any]) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        log.warning("ignoring unreadable checkpoint %s (%s)", path, exc)
        return None
    if state.get("format") != CHECKPOINT_FORMAT or state.get("fingerprint") != fingerprint:
        log.warning("checkpoint %s was made with other settings or data; starting afresh", path)
        return None
    return state


# --------------------------------------------------------------------------- training


@dataclass
class _Session:
    """Everything one training run holds between its steps."""

    variant: dict[str, Any]
    beta: float
    cfg: dict[str, Any]
    device: torch.device
    model: VAE
    optimizer: torch.optim.Optimizer
    train: torch.Tensor
    val: torch.Tensor
    mask: torch.Tensor
    g_shuffle: torch.Generator
    g_noise: torch.Generator
    val_seed: int
    fingerprint: dict[str, Any]
    checkpoint_path: Path
    runner: _Runner | None = None
    staging: torch.Tensor | None = None  # pinned host buffer of one batch (data in host memory)
    iter_log: list[np.ndarray] = field(default_factory=list)  # per epoch: (batches, 1 + METRICS)
    grad_norms: list[torch.Tensor] = field(default_factory=list)  # this epoch's, before clipping
    epoch_log: list[list[Any]] = field(default_factory=list)  # (iteration, epoch, split, n, *metrics)
    start_epoch: int = 0

    @property
    def iteration(self) -> int:
        return sum(len(a) for a in self.iter_log)

    def batch(self, idx: torch.Tensor) -> torch.Tensor:
        """Training patterns ``idx`` on the training device."""
        if self.staging is None:  # the data lives on the device already
            return self.train[idx]
        out = self.staging[:len(idx)]
        torch.index_select(self.train, 0, idx, out=out)
        return out.to(self.device, non_blocking=True)


#: A training set given in memory instead of a sample file: ``(train, val, mask)``.
SampleArrays = tuple[np.ndarray, np.ndarray, np.ndarray]


def _sample_arrays(dataset: str | os.PathLike | SampleArrays) -> SampleArrays:
    """``(train, val, mask)`` of a sample file (:func:`read_sample`) or of arrays given in
    memory (``benchmarks/gpu_check.py``), checked alike."""
    if isinstance(dataset, (str, os.PathLike)):
        return read_sample(dataset)
    train, val, mask = dataset
    train, val = np.asarray(train, dtype=np.float32), np.asarray(val, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if train.ndim != 3 or val.ndim != 3 or train.shape[1:] != mask.shape or val.shape[1:] != mask.shape:
        raise ValueError(f"inconsistent shapes train {train.shape}, val {val.shape}, mask {mask.shape}")
    if len(train) == 0:
        raise ValueError("empty training set")
    return train, val, mask


def _setup(dataset_path: str | os.PathLike | SampleArrays, variant: dict[str, Any], cfg: dict[str, Any],
           checkpoint_path: str | os.PathLike, seed: int, use_gpu: bool, threads: int) -> _Session:
    """Device, data, model, optimiser and generators of a fresh run (``dataset_path``:
    a sample file, or its ``(train, val, mask)`` arrays)."""
    variant = dict(variant)
    beta = variant_beta(variant)
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, int(threads)))
    configure_device(device, cfg)
    amp = use_bf16(device, cfg)
    train_np, val_np, mask_np = _sample_arrays(dataset_path)
    compiled = device.type == "cuda" and compile_wanted(cfg, len(train_np))
    on_device = device.type != "cuda" or bool(cfg["data_on_device"])
    pattern_shape = tuple(int(v) for v in mask_np.shape)
    fingerprint = {
        "variant": variant, "seed": int(seed), "pattern_shape": list(pattern_shape),
        "data": _data_fingerprint(train_np, val_np, mask_np),
        "training": {k: v for k, v in cfg.items() if k not in _NON_TRAJECTORY_KEYS},
        # a checkpoint of another device or precision holds other generator states and
        # another trajectory: it is not resumed
        "device": device.type, "bf16": amp, "compiled": compiled,
    }
    log.info("training %s on %s (%d threads; bf16 %s, torch.compile %s, data in %s memory)",
             variant, device, int(threads), amp, compiled, "device" if on_device else "pinned host")
    if on_device:
        # Device-resident data: no loader, no host-device copies per step.
        train = torch.from_numpy(train_np).to(device)
        val = torch.from_numpy(val_np).to(device)
        staging = None
    else:
        train = torch.from_numpy(train_np).pin_memory()
        val = torch.from_numpy(val_np).pin_memory()
        staging = torch.empty((int(cfg["batch_size"]), *pattern_shape), dtype=torch.float32).pin_memory()
    mask = torch.from_numpy(mask_np).to(device)
    del train_np, val_np

    init_seed, shuffle_seed, noise_seed, val_seed = _seeds(seed, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = build_from_training(variant, pattern_shape, cfg)
    memory_format = torch.channels_last if cfg["channels_last"] else torch.preserve_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(
        layer_rate_groups(model, cfg["lr_fan_in_ref"]), lr=float(cfg["learning_rate"]),
        betas=tuple(float(b) for b in cfg["adam_betas"]),
    )
    return _Session(
        variant=variant, beta=beta, cfg=cfg, device=device, model=model, optimizer=optimizer,
        train=train, val=val, mask=mask,
        g_shuffle=torch.Generator().manual_seed(shuffle_seed),
        g_noise=torch.Generator(device=device).manual_seed(noise_seed),
        val_seed=val_seed, fingerprint=fingerprint, checkpoint_path=Path(checkpoint_path),
        staging=staging,
    )


class _UnrestorableCheckpoint(Exception):
    """A checkpoint that matches the run but cannot be restored into it."""


def _resume(s: _Session) -> None:
    """Continue from the checkpoint when it was made by this very run's settings.

    Raises
    ------
    _UnrestorableCheckpoint
        When it matches but cannot be restored (a corrupt or foreign state); the
        session may then be half-restored.
    """
    state = _load_checkpoint(s.checkpoint_path, s.fingerprint)
    if state is None:
        return
    try:
        s.model.load_state_dict(state["model"])
        s.optimizer.load_state_dict(state["optimizer"])
        s.g_shuffle.set_state(state["rng_shuffle"])
        s.g_noise.set_state(state["rng_noise"].to(s.g_noise.get_state().device))
        s.iter_log = [t.numpy() for t in state["iter_log"]]
        s.epoch_log = json.loads(state["epoch_log"])
        s.start_epoch = int(state["epoch"])
    except Exception as exc:
        raise _UnrestorableCheckpoint(str(exc)) from exc
    log.info("resuming %s from epoch %d of %s", s.variant, s.start_epoch, s.checkpoint_path)


def compile_shapes(n_train: int, n_val: int, cfg: Mapping[str, Any],
                   contrastive: bool) -> list[tuple[int, bool]]:
    """Every ``(batch size, grad enabled)`` the encoder and decoder see in a run: full
    and last (partial) training batches with grad, validation batches without; the
    contrastive variant trains and validates on two views (2 x the batch) and also
    validates one clean view."""
    bs, ebs = int(cfg["batch_size"]), int(cfg["eval_batch_size"])
    views = 2 if contrastive else 1

    def sizes(n: int, b: int) -> list[int]:
        return sorted({min(b, n), *([n % b] if n % b else [])}) if n else []

    shapes = [(views * n, True) for n in sizes(n_train, bs)]
    shapes += [(views * n, False) for n in sizes(n_val, ebs)]
    if contrastive:
        shapes += [(n, False) for n in sizes(n_val, ebs)]
    return shapes


def _train_step(s: _Session, idx: torch.Tensor, beta: float, lr: float) -> torch.Tensor:
    """One optimizer step on training patterns ``idx`` with KL weight ``beta`` and
    learning rate ``lr``; returns the step's :data:`METRICS` stacked, float32, on the
    training device (no sync)."""
    terms = _batch_losses(s.runner, s.batch(idx), s.mask, s.variant, beta, s.cfg["contrastive"], s.g_noise)
    s.optimizer.zero_grad(set_to_none=True)
    terms["loss"].backward()
    norm = clip_gradients(s.model, s.cfg["grad_clip_norm"])
    if norm is not None:
        s.grad_norms.append(norm.detach())
    for group in s.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    s.optimizer.step()
    return torch.stack([terms[m].detach().float() for m in METRICS])


def _epoch_batches(s: _Session, iteration: int) -> Iterator[tuple[torch.Tensor, float, float]]:
    """One epoch's training batches from step ``iteration`` on: ``(indices, KL weight,
    learning rate)`` per step, in the order of a fresh shuffle from ``g_shuffle``, the
    weight from the KL hold / warm-up schedule, the rate from :func:`learning_rate`."""
    bs, n_train = int(s.cfg["batch_size"]), len(s.train)
    per_epoch = math.ceil(n_train / bs)
    hold = float(s.cfg["kl_hold_epochs"]) * per_epoch
    ramp = float(s.cfg["kl_warmup_epochs"]) * per_epoch
    perm = torch.randperm(n_train, generator=s.g_shuffle)
    if s.staging is None:
        perm = perm.to(s.device)
    peak, warmup = float(s.cfg["learning_rate"]), int(s.cfg["lr_warmup_steps"])
    for k, start in enumerate(range(0, n_train, bs)):
        yield (perm[start:start + bs], s.beta * kl_weight(iteration + k, hold, ramp),
               learning_rate(iteration + k, peak, warmup))


def training_steps(s: _Session) -> Iterator[torch.Tensor]:
    """The optimizer steps of the run in ``s``, one per ``next()``, epoch after epoch from
    the session's state: :func:`_run_epoch`'s batches (:func:`_epoch_batches`) and step
    (:func:`_train_step`), without validation, loss log or checkpoint. Each item is the
    step's :data:`METRICS` on the training device, unsynchronised.
    ``benchmarks/gpu_check.py`` trains a fixed number of steps with it (``s.runner`` set
    as :func:`train_variant` sets it)."""
    iteration = s.iteration
    s.model.train()
    while True:
        for idx, beta_now, lr in _epoch_batches(s, iteration):
            yield _train_step(s, idx, beta_now, lr)
            iteration += 1


def _run_epoch(s: _Session, epoch: int) -> None:
    """One epoch: the training batches, the validation, the log line, the checkpoint."""
    t0 = time.perf_counter()
    cfg, ccfg, runner = s.cfg, s.cfg["contrastive"], s.runner
    epochs, bs, n_train = int(cfg["epochs"]), int(cfg["batch_size"]), len(s.train)
    iteration = s.iteration
    s.model.train()
    # Kept on the device: one transfer per epoch instead of a sync per step.
    s.grad_norms = []
    rows = [_train_step(s, idx, beta_now, lr) for idx, beta_now, lr in _epoch_batches(s, iteration)]
    metrics = torch.stack(rows).cpu().double().numpy()
    if not np.isfinite(metrics).all():
        bad = int(np.argmin(np.isfinite(metrics).all(axis=1)))
        raise FloatingPointError(
            f"non-finite loss at step {iteration + bad + 1} (epoch {epoch + 1}) of {s.variant}: "
            f"learning rate {float(cfg['learning_rate']):g} after a {int(cfg['lr_warmup_steps'])}-step "
            f"warm-up, gradient norm clipped at {cfg['grad_clip_norm']}; a longer "
            "training.lr_warmup_steps, a lower training.grad_clip_norm or a lower "
            "training.learning_rate trains more stably")
    clipped = ""
    if s.grad_norms:
        norms = torch.stack(s.grad_norms).cpu().numpy()
        clipped = (f", gradient norm median {np.median(norms):.3g} (clipped in "
                   f"{int((norms > float(cfg['grad_clip_norm'])).sum())} of {len(norms)} steps)")
    sizes = np.diff(np.minimum(np.arange(0, n_train + bs, bs), n_train))[: len(metrics)]
    s.iter_log.append(np.column_stack([sizes, metrics]))
    iteration += len(metrics)

    s.model.eval()
    epoch_rows = [["train", n_train, *np.average(metrics, axis=0, weights=sizes)]]
    val_seed_e = _seeds(s.val_seed + epoch, 1)[0]
    if len(s.val):
        eval_bs = int(cfg["eval_batch_size"])
        v = _evaluate(runner, s.val, s.mask, s.variant, s.beta, ccfg, val_seed_e, eval_bs)
        epoch_rows.append(["val", len(s.val), *(v[m] for m in METRICS)])
        if s.variant["loss"] == "contrastive":
            clean = {**s.variant, "loss": "vae", "beta": 1.0}
            v = _evaluate(runner, s.val, s.mask, clean, 1.0, ccfg, val_seed_e, eval_bs)
            v["loss"] = v["l2"] + s.beta * v["kl"]
            epoch_rows.append(["val_clean", len(s.val), *(v[m] for m in METRICS)])
    s.epoch_log += [[iteration, epoch + 1, *r] for r in epoch_rows]
    log.info(
        "%s epoch %d/%d: %.1f s, train L2 %.4g KL %.4g%s%s",
        s.variant, epoch + 1, epochs, time.perf_counter() - t0, epoch_rows[0][2], epoch_rows[0][3],
        f", val L2 {epoch_rows[1][2]:.4g} KL {epoch_rows[1][3]:.4g}" if len(epoch_rows) > 1 else "",
        clipped,
    )
    _save_checkpoint(s.checkpoint_path, {
        "format": CHECKPOINT_FORMAT, "fingerprint": s.fingerprint, "epoch": epoch + 1,
        "model": s.model.state_dict(), "optimizer": s.optimizer.state_dict(),
        "rng_shuffle": s.g_shuffle.get_state(), "rng_noise": s.g_noise.get_state(),
        "iter_log": [torch.from_numpy(a) for a in s.iter_log], "epoch_log": json.dumps(s.epoch_log),
    })


def _finish(s: _Session, seed: int, weights_path: str | os.PathLike,
            losses_csv_path: str | os.PathLike, plot_path: str | os.PathLike) -> None:
    """Weights, loss CSV and loss plot of the finished run."""
    cfg = s.cfg
    frame = _loss_frame(s.iter_log, s.epoch_log)
    final = {
        f"{r['split']}_{m}": float(r[m])
        for _, r in frame[(frame["level"] == "epoch") & (frame["epoch"] == frame["epoch"].max())].iterrows()
        for m in ("l2", "kl")
    }
    meta = {
        "variant": s.variant, "latent_dim": int(s.variant["latent_dim"]), "beta": s.beta,
        "pattern_shape": list(s.mask.shape), "width_factor": effective_width(s.variant, cfg),
        "projection_dim": int(cfg["contrastive"]["projection_dim"]), "training": _interned(cfg),
        "seed": int(seed), "epochs_trained": int(cfg["epochs"]), "iterations": s.iteration,
        "device": s.device.type, "torch": str(torch.__version__), "final": final,
    }
    save_weights(weights_path, s.model, meta)
    with atomic_path(losses_csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    title = variant_label(s.variant)
    plot_losses(frame, plot_path, title=title, window=int(cfg["smoothing_window"]))
    if not cfg["keep_checkpoint"]:
        s.checkpoint_path.unlink(missing_ok=True)
    log.info("%s done: %s", title, final)


def _interned(settings: Any) -> Any:
    """``settings`` with every key an interned string. Pickle shares repeated string
    objects, so without this the bytes of a weights file would depend on where the
    settings were parsed (``width_factor`` is also a key of ``meta``)."""
    if isinstance(settings, dict):
        return {sys.intern(k) if isinstance(k, str) else k: _interned(v) for k, v in settings.items()}
    return settings


def train_variant(
    dataset_path: str | os.PathLike,
    variant: dict[str, Any],
    training: dict[str, Any],
    weights_path: str | os.PathLike,
    losses_csv_path: str | os.PathLike,
    plot_path: str | os.PathLike,
    checkpoint_path: str | os.PathLike,
    seed: int,
    use_gpu: bool,
    threads: int,
) -> None:
    """Train (or resume training) one variant and write weights, loss CSV and loss plot.

    Parameters
    ----------
    dataset_path
        The sample (:mod:`latentebsd.io.sample`): ``train`` (N, h, w), ``val``
        (M, h, w) float32 in [-1, 1] and ``mask`` (h, w) bool; or those three arrays.
    variant
        ``{"loss": "vae" | "beta_vae" | "contrastive", "latent_dim": d, "beta": b}``.
    training
        The validated ``training`` config section (``latentebsd.config.section``).
    weights_path
        Output (:mod:`latentebsd.io.weights`).
    losses_csv_path
        Output: one row per iteration (training batch) and per epoch (train mean, val,
        and for the contrastive variant val_clean), columns :data:`CSV_COLUMNS`.
    plot_path
        Output: Fig. 3D/E-style L2 and KL curves (smoothed, log scale).
    checkpoint_path
        Written at the end of every epoch; resumed from when it matches this run.
    seed
        Seeds initialisation, shuffling, sampling and augmentations.
    use_gpu
        Train on CUDA if it is available (else CPU).
    threads
        CPU threads for torch.
    """
    try:
        s = _setup(dataset_path, variant, training, checkpoint_path, seed, use_gpu, threads)
        try:
            _resume(s)
        except _UnrestorableCheckpoint as exc:
            # a checkpoint never stops a run; the half-restored session is rebuilt
            log.warning("checkpoint %s could not be restored (%s); starting afresh",
                        s.checkpoint_path, exc)
            s = _setup(dataset_path, variant, training, checkpoint_path, seed, use_gpu, threads)
        s.runner = _Runner(s.model, s.device, s.cfg, amp=s.fingerprint["bf16"])
        if s.fingerprint["compiled"]:
            s.runner.try_compile(s.mask, compile_shapes(len(s.train), len(s.val), s.cfg,
                                                        s.variant["loss"] == "contrastive"))
        for epoch in range(s.start_epoch, int(s.cfg["epochs"])):
            _run_epoch(s, epoch)
    except torch.OutOfMemoryError as exc:
        raise MemoryError(
            f"out of GPU memory training {variant} ({str(exc).splitlines()[0]}): lower "
            f"training.batch_size (now {training['batch_size']}) or training.eval_batch_size "
            f"(now {training['eval_batch_size']}), set training.data_on_device: false to keep "
            "the training set in pinned host memory, or give the job a GPU of its own"
        ) from exc
    _finish(s, seed, weights_path, losses_csv_path, plot_path)


def run_train_rule(dataset_path: str, variant: dict[str, Any], training: dict[str, Any],
                   weights_path: str, losses_csv_path: str, plot_path: str, checkpoint_path: str,
                   seed: int, gpus: int, threads: int, shared: int = 0) -> None:
    """What rule ``train`` runs: :func:`train_variant` on the job's device
    (:func:`latentebsd.workflow.job_device`)."""
    train_variant(dataset_path, variant, training, weights_path, losses_csv_path, plot_path,
                  checkpoint_path, seed, use_gpu=job_device(gpus, "train", shared) == "cuda",
                  threads=threads)


def _loss_frame(iter_log: list[np.ndarray], epoch_log: list[list[Any]]) -> pd.DataFrame:
    rows = []
    iteration = 0
    for epoch, block in enumerate(iter_log, start=1):
        for row in block:
            iteration += 1
            rows.append([iteration, epoch, "iteration", "train", int(row[0]), *row[1:]])
    rows += [[it, ep, "epoch", split, n, *vals] for it, ep, split, n, *vals in epoch_log]
    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    return frame.sort_values(["iteration", "level"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- plots


def _read_losses(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    return source if isinstance(source, pd.DataFrame) else pd.read_csv(source)


def _auto_window(n_iterations: int, window: int | None) -> int:
    # The paper smooths 76k iterations over 500; short demo runs keep >= ~10 windows.
    cap = max(1, n_iterations // 10)
    return max(1, min(int(window) if window else 500, cap))


def _panels(axes: Any, frame: pd.DataFrame, color: Any, label: str, window: int | None, metrics: tuple[str, ...]) -> None:
    it = frame[frame["level"] == "iteration"]
    w = _auto_window(len(it), window)
    for ax, metric in zip(axes, metrics):
        smooth = it[metric].rolling(w, min_periods=1).mean()
        ax.plot(it["iteration"], smooth, color=color, lw=1.2, label=f"{label} train")
        val = frame[(frame["level"] == "epoch") & (frame["split"] == "val")]
        if len(val):
            ax.plot(val["iteration"], val[metric], color=color, lw=1.2, ls="--", label=f"{label} val")


def _finish_axes(axes: Any, metrics: tuple[str, ...]) -> None:
    names = {"l2": "masked L2 (sum of squares / pattern)", "kl": "KL divergence", "contrastive": "NT-Xent"}
    for ax, metric in zip(axes, metrics):
        ax.set_yscale("log")
        ax.set_xlabel("iteration")
        ax.set_ylabel(names[metric])
        ax.grid(True, which="both", alpha=0.3)


def plot_losses(
    source: str | os.PathLike | pd.DataFrame, out_path: str | os.PathLike, title: str = "",
    window: int | None = None,
) -> None:
    """Fig. 3D/E for one variant: smoothed train (solid) and val (dashed) L2 and KL, log y."""
    plt = pyplot()
    frame = _read_losses(source)
    has_con = bool((frame["contrastive"] != 0).any())
    metrics = ("l2", "kl", "contrastive") if has_con else ("l2", "kl")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), constrained_layout=True)
    _panels(axes, frame, "C0", "", window, metrics)
    _finish_axes(axes, metrics)
    axes[0].legend(["train", "validation"], fontsize=8)
    fig.suptitle(title)
    save_figure(fig, out_path, dpi=120)


def plot_loss_comparison(
    csvs: Mapping[str, str | os.PathLike], out_path: str | os.PathLike, window: int | None = None
) -> None:
    """All variants on one Fig. 3D/E pair: each variant in its colour of every figure
    (:func:`latentebsd.plotting.method_style`, ``csvs`` in the configured order), train
    solid, val dashed."""
    from latentebsd.plotting import method_style

    plt = pyplot()
    metrics = ("l2", "kl")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    names = list(csvs)
    for name, path in csvs.items():
        colour = method_style(name, names, "latent")["color"]
        _panels(axes, _read_losses(path), colour, name, window, metrics)
    _finish_axes(axes, metrics)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("training (solid) and validation (dashed) losses")
    save_figure(fig, out_path, dpi=120)
