"""Train one VAE variant: resumable, seeded, CPU or GPU; losses to CSV and plots.

Entry point for the workflow: :func:`train_variant`. Later stages rebuild a trained
model from its weights file alone with :func:`load_model`.

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

import copy
import hashlib
import json
import logging
import math
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import h5py
import numpy as np
import torch

from latentebsd.io import atomic_path
from latentebsd.models import (
    VAE,
    Decoder,
    Encoder,
    INITS,
    augment,
    build_model,
    kl_divergence,
    l2_scale,
    masked_l2,
    nt_xent,
    reparameterize,
    variant_beta,
)

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "latentebsd.vae/1"
CHECKPOINT_FORMAT = "latentebsd.checkpoint/1"
METRICS = ("l2", "kl", "contrastive", "loss")
CSV_COLUMNS = ("iteration", "epoch", "level", "split", "n", *METRICS)

#: The paper's settings; a config's ``training:`` section overrides any of them.
DEFAULT_TRAINING: dict[str, Any] = {
    "epochs": 250,                 # paper: 250
    "batch_size": 256,             # paper: 256
    "learning_rate": 1.0e-3,       # paper: 0.001
    "adam_betas": [0.9, 0.999],    # paper: gradient decay 0.9, squared gradient decay 0.999
    "width_factor": 1.0,           # channel scale; 1 = Table 2
    "base_channels": None,         # if set: same convolutions for every d (overrides width_factor)
    "min_channels": 4,             # width scaling never goes below min(paper width, this)
    "init": "glorot",              # glorot = MATLAB's default (the paper); he; torch
    "eval_batch_size": 1024,       # validation batch size (memory only, not results)
    "smoothing_window": 500,       # moving-average window (iterations) of the plots; paper 500
    "bf16": True,                  # CUDA only: bf16 autocast
    "channels_last": True,         # memory layout (faster on CPU oneDNN and on GPU)
    "compile": True,               # CUDA only: torch.compile encoder and decoder
    "keep_checkpoint": True,       # keep checkpoint.pt after success (allows extending epochs)
    "kl_hold_epochs": 0.0,         # KL weight 0 for these first epochs; paper 0
    "kl_warmup_epochs": 0.0,       # then a linear ramp 0 -> beta over these epochs; paper 0
    "contrastive": {
        "weight": 20.0,            # paper: x20
        "temperature": 0.5,        # NT-Xent temperature (not given in the paper; SimCLR's 0.5)
        "projection_dim": 64,      # projection head output (not given in the paper)
        "salt_pepper": 0.02,       # fraction of pixels set to -1 / +1
        "gaussian_sigma": 0.05,    # std of additive noise, in [-1, 1] units
        "gamma_range": [0.7, 1.5], # gamma drawn log-uniformly per pattern
    },
}

# Keys that change neither the trajectory nor the result; everything else must match
# for a checkpoint to be resumed.
_NON_TRAJECTORY_KEYS = ("epochs", "eval_batch_size", "smoothing_window", "keep_checkpoint", "compile")


# --------------------------------------------------------------------------- config


def resolve_training(training: Mapping[str, Any] | None) -> dict[str, Any]:
    """Defaults (:data:`DEFAULT_TRAINING`) overridden by ``training``, validated.

    Raises
    ------
    ValueError
        On an unknown key or an out-of-range value.
    """
    cfg = copy.deepcopy(DEFAULT_TRAINING)
    for key, value in dict(training or {}).items():
        if key not in cfg:
            raise ValueError(f"unknown training key {key!r}; known: {sorted(cfg)}")
        if key == "contrastive":
            unknown = set(value or {}) - set(cfg["contrastive"])
            if unknown:
                raise ValueError(f"unknown training.contrastive keys {sorted(unknown)}")
            cfg["contrastive"].update(value or {})
        else:
            cfg[key] = value
    if int(cfg["epochs"]) < 1 or int(cfg["batch_size"]) < 1 or int(cfg["eval_batch_size"]) < 1:
        raise ValueError("epochs, batch_size and eval_batch_size must be >= 1")
    if float(cfg["learning_rate"]) <= 0 or float(cfg["width_factor"]) <= 0:
        raise ValueError("learning_rate and width_factor must be > 0")
    if cfg["base_channels"] is not None and int(cfg["base_channels"]) < 1:
        raise ValueError("base_channels must be null or >= 1")
    if int(cfg["min_channels"]) < 1:
        raise ValueError("min_channels must be >= 1")
    if cfg["init"] not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {cfg['init']!r}")
    if float(cfg["kl_warmup_epochs"]) < 0 or float(cfg["kl_hold_epochs"]) < 0:
        raise ValueError("kl_hold_epochs and kl_warmup_epochs must be >= 0")
    b1, b2 = (float(v) for v in cfg["adam_betas"])
    if not (0 <= b1 < 1 and 0 <= b2 < 1):
        raise ValueError(f"adam_betas must be in [0, 1), got {cfg['adam_betas']}")
    c = cfg["contrastive"]
    lo, hi = (float(v) for v in c["gamma_range"])
    if not 0 < lo <= hi:
        raise ValueError(f"contrastive.gamma_range must satisfy 0 < lo <= hi, got {c['gamma_range']}")
    if not 0 <= float(c["salt_pepper"]) <= 1 or float(c["gaussian_sigma"]) < 0:
        raise ValueError("contrastive.salt_pepper must be in [0, 1] and gaussian_sigma >= 0")
    if float(c["temperature"]) <= 0 or int(c["projection_dim"]) < 1:
        raise ValueError("contrastive.temperature must be > 0 and projection_dim >= 1")
    return cfg


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


def _seeds(seed: int, n: int) -> list[int]:
    """``n`` independent 63-bit seeds derived from one (numpy's SeedSequence)."""
    state = np.random.SeedSequence(int(seed)).generate_state(2 * n, dtype=np.uint32)
    return [int(state[2 * i]) << 31 ^ int(state[2 * i + 1]) for i in range(n)]


# --------------------------------------------------------------------------- data


def load_dataset(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(train (N, h, w), val (M, h, w), mask (h, w) bool)`` from the preprocessing HDF5."""
    with h5py.File(path, "r") as f:
        for key in ("train", "val", "mask"):
            if key not in f:
                raise KeyError(f"{path}: missing dataset {key!r}")
        train = np.asarray(f["train"][()], dtype=np.float32)
        val = np.asarray(f["val"][()], dtype=np.float32)
        mask = np.asarray(f["mask"][()], dtype=bool)
    if train.ndim != 3 or val.ndim != 3 or train.shape[1:] != mask.shape or val.shape[1:] != mask.shape:
        raise ValueError(f"{path}: inconsistent shapes train {train.shape}, val {val.shape}, mask {mask.shape}")
    if len(train) == 0:
        raise ValueError(f"{path}: empty training set")
    return train, val, mask


def _data_fingerprint(train: np.ndarray, val: np.ndarray, mask: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in (train, val, mask):
        h.update(str(a.shape).encode())
        h.update(np.ascontiguousarray(a).view(np.uint8))
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- steps


class _Runner:
    """The callables a step needs: maybe-compiled encoder / decoder, the projection."""

    def __init__(self, model: VAE, device: torch.device, cfg: dict[str, Any]) -> None:
        self.model = model
        self.device = device
        self.amp = device.type == "cuda" and bool(cfg["bf16"])
        self.channels_last = bool(cfg["channels_last"])
        self.encode: Callable = model.encoder
        self.decode: Callable = model.decoder
        self.l2_scale = l2_scale(model.encoder.pattern_shape)

    def try_compile(self, mask: torch.Tensor, batch_size: int = 2) -> None:
        """Compile encoder and decoder; on any failure keep eager mode (results are the same)."""
        enc, dec = torch.compile(self.model.encoder), torch.compile(self.model.decoder)
        try:
            # Warm-up on zeros at the training batch size: consumes no generator state,
            # grads are discarded; a failing toolchain shows here, not mid-training.
            x = torch.zeros((batch_size, *mask.shape), device=self.device)
            with self.autocast():
                mean, _ = enc(self._layout(x))
                dec(mean.float()).float().sum().backward()
        except Exception as exc:  # pragma: no cover - depends on the CUDA toolchain
            log.warning("torch.compile failed (%s); training in eager mode", exc)
        else:
            self.encode, self.decode = enc, dec
        finally:
            self.model.zero_grad(set_to_none=True)

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
    gen = torch.Generator(device=data.device).manual_seed(seed)
    sums = torch.zeros(len(METRICS), dtype=torch.float64, device=data.device)
    for start in range(0, len(data), batch_size):
        x = data[start:start + batch_size]
        terms = _batch_losses(runner, x, mask, variant, beta, ccfg, gen)
        sums += torch.stack([terms[m].double() for m in METRICS]) * len(x)
    values = (sums / max(len(data), 1)).cpu().tolist()
    return dict(zip(METRICS, values))


# --------------------------------------------------------------------------- checkpoint


def _build(variant: dict[str, Any], pattern_shape: tuple[int, ...], cfg: dict[str, Any]) -> VAE:
    base = cfg.get("base_channels")
    return build_model(
        variant, pattern_shape, float(cfg["width_factor"]),
        projection_dim=int(cfg["contrastive"]["projection_dim"]), init=cfg.get("init", "glorot"),
        base_channels=None if base is None else int(base), min_channels=int(cfg.get("min_channels", 4)),
    )


def _effective_width(variant: dict[str, Any], cfg: dict[str, Any]) -> float:
    base = cfg.get("base_channels")
    return float(cfg["width_factor"]) if base is None else 4.0 * int(base) / int(variant["latent_dim"])


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
        HDF5 with ``train`` (N, h, w), ``val`` (M, h, w) float32 in [-1, 1] and
        ``mask`` (h, w) bool.
    variant
        ``{"loss": "vae" | "beta_vae" | "contrastive", "latent_dim": d, "beta": b}``.
    training
        Overrides of :data:`DEFAULT_TRAINING`.
    weights_path
        Output: ``{"format", "state_dict", "meta"}``; see :func:`load_model`.
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
    cfg = resolve_training(training)
    variant = dict(variant)
    beta = variant_beta(variant)
    ccfg = cfg["contrastive"]
    device = torch.device("cuda" if use_gpu and torch.cuda.is_available() else "cpu")
    torch.set_num_threads(max(1, int(threads)))
    if device.type == "cpu":
        # A collapsing KL drives activations into denormals, which made CPU epochs 20x
        # slower; flushing them to zero is deterministic.
        torch.set_flush_denormal(True)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    train_np, val_np, mask_np = load_dataset(dataset_path)
    pattern_shape = tuple(int(v) for v in mask_np.shape)
    fingerprint = {
        "variant": variant, "seed": int(seed), "pattern_shape": list(pattern_shape),
        "data": _data_fingerprint(train_np, val_np, mask_np),
        "training": {k: v for k, v in cfg.items() if k not in _NON_TRAJECTORY_KEYS},
    }
    # Device-resident data: no loader, no host-device copies per step.
    train = torch.from_numpy(train_np).to(device)
    val = torch.from_numpy(val_np).to(device)
    mask = torch.from_numpy(mask_np).to(device)
    del train_np, val_np

    init_seed, shuffle_seed, noise_seed, val_seed = _seeds(seed, 4)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(init_seed)
        model = _build(variant, pattern_shape, cfg)
    memory_format = torch.channels_last if cfg["channels_last"] else torch.preserve_format
    model = model.to(device=device, memory_format=memory_format)
    optimizer = torch.optim.Adam(
        model.parameters(), lr=float(cfg["learning_rate"]), betas=tuple(float(b) for b in cfg["adam_betas"])
    )
    g_shuffle = torch.Generator().manual_seed(shuffle_seed)
    g_noise = torch.Generator(device=device).manual_seed(noise_seed)

    iter_log: list[np.ndarray] = []   # per epoch: (n_batches, len(METRICS) + 1) with n
    epoch_log: list[list[Any]] = []   # rows (iteration, epoch, split, n, *metrics)
    start_epoch = 0
    checkpoint_path = Path(checkpoint_path)
    state = _load_checkpoint(checkpoint_path, fingerprint)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        g_shuffle.set_state(state["rng_shuffle"])
        g_noise.set_state(state["rng_noise"].to(g_noise.get_state().device))
        iter_log = [t.numpy() for t in state["iter_log"]]
        epoch_log = json.loads(state["epoch_log"])
        start_epoch = int(state["epoch"])
        log.info("resuming %s from epoch %d of %s", variant, start_epoch, checkpoint_path)

    runner = _Runner(model, device, cfg)
    if device.type == "cuda" and cfg["compile"]:
        runner.try_compile(mask, min(int(cfg["batch_size"]), len(train)))

    epochs, bs = int(cfg["epochs"]), int(cfg["batch_size"])
    n_train = len(train)
    iteration = sum(len(a) for a in iter_log)
    per_epoch = math.ceil(n_train / bs)
    hold, ramp = float(cfg["kl_hold_epochs"]) * per_epoch, float(cfg["kl_warmup_epochs"]) * per_epoch
    for epoch in range(start_epoch, epochs):
        t0 = time.perf_counter()
        model.train()
        perm = torch.randperm(n_train, generator=g_shuffle).to(device)
        rows = []
        for start in range(0, n_train, bs):
            idx = perm[start:start + bs]
            beta_now = beta * kl_weight(iteration + len(rows), hold, ramp)
            terms = _batch_losses(runner, train[idx], mask, variant, beta_now, ccfg, g_noise)
            optimizer.zero_grad(set_to_none=True)
            terms["loss"].backward()
            optimizer.step()
            # Kept on the device: one transfer per epoch instead of a sync per step.
            rows.append(torch.stack([terms[m].detach().float() for m in METRICS]))
        metrics = torch.stack(rows).cpu().double().numpy()
        if not np.isfinite(metrics).all():
            raise FloatingPointError(f"non-finite loss in epoch {epoch + 1} of {variant}")
        sizes = np.diff(np.minimum(np.arange(0, n_train + bs, bs), n_train))[: len(metrics)]
        iter_log.append(np.column_stack([sizes, metrics]))
        iteration += len(metrics)

        model.eval()
        epoch_rows = [["train", n_train, *np.average(metrics, axis=0, weights=sizes)]]
        val_seed_e = _seeds(val_seed + epoch, 1)[0]
        if len(val):
            v = _evaluate(runner, val, mask, variant, beta, ccfg, val_seed_e, int(cfg["eval_batch_size"]))
            epoch_rows.append(["val", len(val), *(v[m] for m in METRICS)])
            if variant["loss"] == "contrastive":
                clean = {**variant, "loss": "vae", "beta": 1.0}
                v = _evaluate(runner, val, mask, clean, 1.0, ccfg, val_seed_e, int(cfg["eval_batch_size"]))
                v["loss"] = v["l2"] + beta * v["kl"]
                epoch_rows.append(["val_clean", len(val), *(v[m] for m in METRICS)])
        epoch_log += [[iteration, epoch + 1, *r] for r in epoch_rows]
        log.info(
            "%s epoch %d/%d: %.1f s, train L2 %.4g KL %.4g%s",
            variant, epoch + 1, epochs, time.perf_counter() - t0, epoch_rows[0][2], epoch_rows[0][3],
            f", val L2 {epoch_rows[1][2]:.4g} KL {epoch_rows[1][3]:.4g}" if len(epoch_rows) > 1 else "",
        )
        _save_checkpoint(checkpoint_path, {
            "format": CHECKPOINT_FORMAT, "fingerprint": fingerprint, "epoch": epoch + 1,
            "model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "rng_shuffle": g_shuffle.get_state(), "rng_noise": g_noise.get_state(),
            "iter_log": [torch.from_numpy(a) for a in iter_log], "epoch_log": json.dumps(epoch_log),
        })

    frame = _loss_frame(iter_log, epoch_log)
    final = {
        f"{r['split']}_{m}": float(r[m])
        for _, r in frame[(frame["level"] == "epoch") & (frame["epoch"] == frame["epoch"].max())].iterrows()
        for m in ("l2", "kl")
    }
    meta = {
        "variant": variant, "latent_dim": int(variant["latent_dim"]), "beta": beta,
        "pattern_shape": list(pattern_shape), "width_factor": _effective_width(variant, cfg),
        "projection_dim": int(ccfg["projection_dim"]), "training": cfg, "seed": int(seed),
        "epochs_trained": epochs, "iterations": iteration, "device": device.type,
        "torch": str(torch.__version__), "final": final,
    }
    save_weights(weights_path, model, meta)
    with atomic_path(losses_csv_path) as tmp:
        frame.to_csv(tmp, index=False)
    title = _variant_label(variant)
    plot_losses(frame, plot_path, title=title, window=int(cfg["smoothing_window"]))
    if not cfg["keep_checkpoint"]:
        checkpoint_path.unlink(missing_ok=True)
    log.info("%s done: %s", title, final)


def _loss_frame(iter_log: list[np.ndarray], epoch_log: list[list[Any]]) -> pd.DataFrame:
    import pandas as pd

    rows = []
    iteration = 0
    for epoch, block in enumerate(iter_log, start=1):
        for row in block:
            iteration += 1
            rows.append([iteration, epoch, "iteration", "train", int(row[0]), *row[1:]])
    rows += [[it, ep, "epoch", split, n, *vals] for it, ep, split, n, *vals in epoch_log]
    frame = pd.DataFrame(rows, columns=list(CSV_COLUMNS))
    return frame.sort_values(["iteration", "level"], kind="stable").reset_index(drop=True)


def _variant_label(variant: Mapping[str, Any]) -> str:
    d = variant["latent_dim"]
    if variant["loss"] == "beta_vae":
        return f"beta-VAE (beta={variant['beta']:g}), d={d}"
    return f"{'contrastive VAE' if variant['loss'] == 'contrastive' else 'VAE'}, d={d}"


# --------------------------------------------------------------------------- loading


def save_weights(path: str | os.PathLike, model: torch.nn.Module, meta: dict[str, Any]) -> Path:
    """Write a weights file (what :func:`load_model` reads): CPU state dict and ``meta``
    (at least ``variant``, ``pattern_shape``, ``width_factor``, ``projection_dim``)."""
    state_dict = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    with atomic_path(path) as tmp:
        torch.save({"format": WEIGHTS_FORMAT, "state_dict": state_dict, "meta": meta}, tmp)
    return Path(path)


def load_model(
    weights_path: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[Encoder, Decoder, dict[str, Any]]:
    """Rebuild a trained encoder and decoder (eval mode) from a weights file alone.

    Returns
    -------
    encoder, decoder, meta
        ``meta`` holds the variant, pattern shape, width factor, resolved training
        settings, seed, epochs and final train / val losses.
    """
    blob = torch.load(weights_path, map_location="cpu", weights_only=True)
    if blob.get("format") != WEIGHTS_FORMAT:
        raise ValueError(f"{weights_path}: not a {WEIGHTS_FORMAT} weights file")
    meta = blob["meta"]
    with torch.random.fork_rng(devices=[]):  # the init is overwritten; keep the caller's RNG
        # Weights files without the resolved training settings still carry the
        # effective width and projection size, which is all the architecture needs.
        build_cfg = meta.get("training") or {
            "width_factor": meta["width_factor"],
            "contrastive": {"projection_dim": meta.get("projection_dim", 64)},
        }
        model = _build(meta["variant"], tuple(meta["pattern_shape"]), build_cfg)
    model.load_state_dict(blob["state_dict"])
    model = model.to(device).eval()
    return model.encoder, model.decoder, meta


# --------------------------------------------------------------------------- plots


def _read_losses(source: str | os.PathLike | pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

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
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = _read_losses(source)
    has_con = bool((frame["contrastive"] != 0).any())
    metrics = ("l2", "kl", "contrastive") if has_con else ("l2", "kl")
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), constrained_layout=True)
    _panels(axes, frame, "C0", "", window, metrics)
    _finish_axes(axes, metrics)
    axes[0].legend(["train", "validation"], fontsize=8)
    fig.suptitle(title)
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out_path).suffix.lstrip(".") or "png")
    plt.close(fig)


def plot_loss_comparison(
    csvs: Mapping[str, str | os.PathLike], out_path: str | os.PathLike, window: int | None = None
) -> None:
    """All variants on one Fig. 3D/E pair: one colour per variant, train solid, val dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = ("l2", "kl")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), constrained_layout=True)
    for i, (name, path) in enumerate(csvs.items()):
        _panels(axes, _read_losses(path), f"C{i % 10}", name, window, metrics)
    _finish_axes(axes, metrics)
    axes[1].legend(fontsize=7, ncol=2)
    fig.suptitle("training (solid) and validation (dashed) losses")
    with atomic_path(out_path) as tmp:
        fig.savefig(tmp, dpi=120, format=Path(out_path).suffix.lstrip(".") or "png")
    plt.close(fig)
