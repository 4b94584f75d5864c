"""Training and encoding throughput of the paper's VAE (Table 2) on this machine.

Prints patterns/s per latent dimension at the paper's 120 x 120 pattern size (or any
``--size``) with the same step the workflow trains with (``latentebsd.train``: masked
L2 + KL, Adam, bf16 autocast / channels-last / torch.compile on CUDA), next to the
paper's reference: 250 epochs x ~76.8k training patterns in ~6 h on an RTX 4090
(MATLAB), i.e. ~890 training patterns/s (the contrastive model took ~40 h, ~130/s).

This is a benchmark, not a test: synthetic random patterns, results printed only.

Examples
--------
    PYTHONPATH=src python benchmarks/train_throughput.py                 # CPU or GPU, d = 16..256
    PYTHONPATH=src python benchmarks/train_throughput.py --size 60 --width-factor 0.25 \
        --batch-size 32 --latent-dims 16,32,64,128,256
"""

from __future__ import annotations

import argparse
import platform
import time

import torch

from latentebsd.config import section
from latentebsd.models import build_model, count_parameters, encode_patterns
from latentebsd.train import _batch_losses, _Runner, compile_shapes, configure_device

PAPER_TRAIN_PATTERNS_PER_S = 250 * 76_800 / (6 * 3600)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(
    d: int, loss: str, size: int, width_factor: float, batch_size: int, steps: int,
    device: torch.device, compile_: bool, base_channels: int | None = None,
) -> tuple[float, float, int]:
    """(training patterns/s, encoding patterns/s, parameters) for one latent dimension."""
    variant = {"loss": loss, "latent_dim": d}
    cfg = section("training", {"width_factor": width_factor, "compile": compile_,
                               "base_channels": base_channels, "batch_size": batch_size})
    torch.manual_seed(0)
    model = build_model(variant, (size, size), width_factor, base_channels=base_channels)
    model = model.to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.999))
    runner = _Runner(model, device, cfg)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    mask = ((yy - (size - 1) / 2) ** 2 + (xx - (size - 1) / 2) ** 2 <= (size / 2) ** 2).to(device)
    if device.type == "cuda" and compile_:
        runner.try_compile(mask, compile_shapes(batch_size, 0, cfg, loss == "contrastive"))
    gen = torch.Generator(device=device).manual_seed(0)
    x = torch.rand((batch_size, size, size), generator=gen, device=device) * 2 - 1

    def step() -> None:
        terms = _batch_losses(runner, x, mask, variant, 1.0, cfg["contrastive"], gen)
        optimizer.zero_grad(set_to_none=True)
        terms["loss"].backward()
        optimizer.step()

    for _ in range(2):  # warm-up: allocator, oneDNN / cuDNN algorithm choice, compilation
        step()
    _sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    _sync(device)
    train_rate = steps * batch_size / (time.perf_counter() - t0)

    n_enc = batch_size * max(2, steps)
    patterns = torch.rand((n_enc, size, size), generator=gen, device=device) * 2 - 1
    encode_patterns(model.encoder, patterns[:batch_size], batch_size, device)
    _sync(device)
    t0 = time.perf_counter()
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=runner.amp):
        encode_patterns(model.encoder, patterns, batch_size, device)
    _sync(device)
    encode_rate = n_enc / (time.perf_counter() - t0)
    return train_rate, encode_rate, count_parameters(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--latent-dims", default="16,32,64,128,256")
    parser.add_argument("--loss", default="vae", choices=["vae", "beta_vae", "contrastive"])
    parser.add_argument("--size", type=int, default=120, help="pattern side (paper: 120)")
    parser.add_argument("--width-factor", type=float, default=1.0, help="channel scale (paper: 1)")
    parser.add_argument("--base-channels", type=int, default=None,
                        help="same convolutions for every d (overrides --width-factor)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: 256 on GPU, 16 on CPU")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 20 GPU, 2 CPU)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile on CUDA")
    args = parser.parse_args()

    device = torch.device("cuda" if args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available()) else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    configure_device(device, section("training"))  # the same flags (TF32, cuDNN) as rule train
    batch = args.batch_size or (256 if device.type == "cuda" else 16)
    steps = args.steps or (20 if device.type == "cuda" else 2)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device: {name}; torch {torch.__version__}; {args.size}x{args.size} patterns, "
          f"width factor {args.width_factor}, base channels {args.base_channels}, loss {args.loss}, batch {batch}, {steps} timed steps")
    print(f"paper reference (RTX 4090, MATLAB): ~{PAPER_TRAIN_PATTERNS_PER_S:.0f} training patterns/s "
          f"(250 epochs x 76.8k patterns in ~6 h)")
    print(f"{'d':>5} {'params':>12} {'train pat/s':>12} {'encode pat/s':>13} {'epoch of 76.8k':>15} {'x paper':>8}")
    for d in (int(v) for v in args.latent_dims.split(",")):
        train_rate, enc_rate, n_params = measure(
            d, args.loss, args.size, args.width_factor, batch, steps, device, not args.no_compile,
            args.base_channels,
        )
        epoch_s = 76_800 / train_rate
        print(f"{d:>5} {n_params:>12,} {train_rate:>12.1f} {enc_rate:>13.1f} {epoch_s:>14.0f}s "
              f"{train_rate / PAPER_TRAIN_PATTERNS_PER_S:>8.3f}", flush=True)


if __name__ == "__main__":
    main()
