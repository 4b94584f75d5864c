"""The paper's learning rate at Table 2 widths: diverges without our stabilisers, trains with them.

Trains a Table 2 VAE (120 x 120, width factor 1, Glorot init, Adam lr 1e-3, betas
0.9 / 0.999: the paper's optimiser) for a fixed number of steps with rule ``train``'s
own code (``latentebsd.train``: ``_setup``, ``_Runner``, ``training_steps``), twice from
the same seed and batches:

- ``paper``: one learning rate for every layer, no warm-up, no gradient clipping (the
  code before the fix);
- ``paper + ours``: the schema's ``lr_fan_in_ref`` (a lower rate for layers wider than
  d = 32's), ``grad_clip_norm`` and a learning-rate warm-up (``--warmup``, default the
  schema's 2000 steps; shorter is the harsher test).

Per run: the first non-finite step (or none), the first step whose loss is non-finite or
above ``BLOWUP`` x the first step's (a diverged run: at batch 8 the paper's vae256 stays
finite but its loss reaches 1e29), the loss over the first and last
quarter of the steps, the largest |latent log-variance| and |mean| seen on the batches
(the quantities that blow up). Training stops at the first non-finite loss.

Examples
--------
CPU reproduction (2 cores, ~2 s per step of d = 128 at batch 8; the divergence comes
within ~40 steps)::

    python benchmarks/paper_lr.py --models vae128 --batch 8 --steps 60 --warmup 20

GPU, the paper's batch (``benchmarks/gpu_check.py`` runs this as a check)::

    python benchmarks/paper_lr.py --device cuda --models vae128,vae256 --batch 256 --steps 600 --warmup 200
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

try:
    import latentebsd  # noqa: F401
except ImportError:  # a checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

sys.path.insert(0, str(Path(__file__).resolve().parent))
from gpu_check import MODELS, screen_mask, synthetic_patterns  # noqa: E402

from latentebsd import train as tr  # noqa: E402
from latentebsd.config import section  # noqa: E402

#: a loss above this multiple of the first step's is a divergence: a VAE's loss at its
#: initialisation (reconstructing noise from an untrained decoder) is the largest a
#: training run that learns can have; 10x leaves room for early Adam overshoots
BLOWUP = 10.0

PAPER = {"learning_rate": 1e-3, "adam_betas": [0.9, 0.999], "width_factor": 1.0, "init": "glorot",
         "kl_hold_epochs": 0, "kl_warmup_epochs": 0}


def settings(batch: int, stabilised: bool, warmup: int, device: str,
             width_factor: float = 1.0) -> dict[str, Any]:
    """The validated ``training`` section: the paper's optimiser, with or without ours."""
    ours = ({"lr_warmup_steps": warmup} if stabilised
            else {"lr_warmup_steps": 0, "grad_clip_norm": None, "lr_fan_in_ref": None})
    return section("training", {**PAPER, **ours, "batch_size": batch, "compile": False,
                                "bf16": device == "cuda", "width_factor": width_factor})


def run(name: str, data: tuple[np.ndarray, np.ndarray, np.ndarray], cfg: dict[str, Any],
        steps: int, device: str, threads: int, seed: int = 0) -> dict[str, Any]:
    """``steps`` training steps of model ``name``; stops at the first non-finite loss."""
    peaks = {"logvar": 0.0, "mean": 0.0}
    real = tr.reparameterize

    def watch(mean: torch.Tensor, logvar: torch.Tensor, generator: Any = None) -> torch.Tensor:
        # the latent mean / log-variance of every batch (a sync per step: fine here)
        peaks["logvar"] = max(peaks["logvar"], float(logvar.detach().abs().max()))
        peaks["mean"] = max(peaks["mean"], float(mean.detach().abs().max()))
        return real(mean, logvar, generator)

    with tempfile.TemporaryDirectory() as tmp:
        s = tr._setup(data, MODELS[name], cfg, Path(tmp) / "checkpoint.pt", seed,
                      device == "cuda", threads)
        s.runner = tr._Runner(s.model, s.device, s.cfg)
        tr.reparameterize = watch
        losses: list[float] = []
        t0 = time.perf_counter()
        try:
            stream = tr.training_steps(s)
            for _ in range(steps):
                losses.append(float(next(stream)[list(tr.METRICS).index("loss")]))
                if not math.isfinite(losses[-1]):
                    break
        finally:
            tr.reparameterize = real
        seconds = time.perf_counter() - t0
    loss = np.asarray(losses)
    q = max(1, len(loss) // 4)
    bad = np.flatnonzero(~np.isfinite(loss))
    with np.errstate(invalid="ignore"):
        blown = np.flatnonzero(~np.isfinite(loss) | (loss > BLOWUP * loss[0])) if len(loss) else bad
    return {"model": name, "steps": len(loss), "first_non_finite_step": int(bad[0]) + 1 if len(bad) else None,
            "diverged_step": int(blown[0]) + 1 if len(blown) else None,
            "first_quarter_loss": float(loss[:q].mean()), "last_quarter_loss": float(loss[-q:].mean()),
            "max_abs_logvar": peaks["logvar"], "max_abs_mean": peaks["mean"], "seconds": seconds,
            "losses": loss.tolist()}


def probe(names: list[str], batch: int, steps: int, warmup: int, device: str, threads: int,
          n_train: int = 2048, seed: int = 0, size: int = 120,
          width_factor: float = 1.0) -> list[dict[str, Any]]:
    """Both runs (paper, paper + ours) of every model in ``names`` (``size`` and
    ``width_factor`` other than 120 and 1 only for the test suite's tiny run)."""
    train = synthetic_patterns(max(n_train, batch), size, seed)
    data = (train, train[:0], screen_mask(size))
    rows = []
    for name in names:
        for label, stabilised in (("paper", False), ("paper + ours", True)):
            cfg = settings(batch, stabilised, warmup, device, width_factor)
            r = run(name, data, cfg, steps, device, threads, seed)
            r.update(run=label, batch=batch, warmup=warmup if stabilised else 0,
                     clip=cfg["grad_clip_norm"], fan_in_ref=cfg["lr_fan_in_ref"])
            rows.append(r)
            print(f"{name} {label}: " + (f"diverged at step {r['diverged_step']}"
                                         if r["diverged_step"] else f"trained {r['steps']} steps")
                  + f", loss {r['first_quarter_loss']:.4g} -> {r['last_quarter_loss']:.4g}, "
                  f"max |logvar| {r['max_abs_logvar']:.3g}, max |mean| {r['max_abs_mean']:.3g} "
                  f"({r['seconds']:.0f} s)", flush=True)
    return rows


def markdown(rows: list[dict[str, Any]]) -> str:
    lines = ["| model | run | batch | lr fan-in ref | lr warm-up | clip | steps | first non-finite step | "
             f"diverged (non-finite or > {BLOWUP:g} x step 1) | loss first -> last quarter | max abs logvar | "
             "max abs mean |", "|" + "---|" * 12]
    for r in rows:
        lines.append(f"| {r['model']} | {r['run']} | {r['batch']} | {r.get('fan_in_ref') or '-'} | "
                     f"{r['warmup']} | {r['clip'] or '-'} | "
                     f"{r['steps']} | {r['first_non_finite_step'] or 'none'} | {r['diverged_step'] or 'no'} | "
                     f"{r['first_quarter_loss']:.4g} -> {r['last_quarter_loss']:.4g} | "
                     f"{r['max_abs_logvar']:.3g} | {r['max_abs_mean']:.3g} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="vae128")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--warmup", type=int, default=section("training")["lr_warmup_steps"])
    ap.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None, help="write paper_lr.json / .md here")
    args = ap.parse_args(argv)
    torch.set_flush_denormal(True)
    rows = probe(args.models.split(","), args.batch, args.steps, args.warmup, args.device, args.threads)
    md = markdown(rows)
    print(md)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "paper_lr.json").write_text(json.dumps(rows, indent=1) + "\n")
        (args.out / "paper_lr.md").write_text(md)
    fixed = [r for r in rows if r["run"] == "paper + ours"]
    return 0 if all(r["diverged_step"] is None for r in fixed) else 1


if __name__ == "__main__":
    sys.exit(main())
