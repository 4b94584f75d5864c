"""The paper's convolutional VAE (Table 2), its beta-VAE and contrastive variants.

Architecture (Calvat et al. 2025, Table 2, 120 x 120 patterns, latent dimension d)
---------------------------------------------------------------------------------
Base width ``b = d / 4``; all kernels 9 x 9; LeakyReLU(0.2) after every convolution;
``(*)`` is a same-size 9 x 9 convolution added back to its input (``x + act(conv(x))``).

- Encoder: conv s2 (no padding) 120 -> 56, b; (*); conv s2 -> 24, 2b; (*);
  conv s2 -> 8, 4b; (*); conv 8 x 8 -> 1 x 1, 2d; fully connected 2d -> 2d, split
  into (mean, log-variance); the sampling layer is :func:`reparameterize`.
- Decoder: fully connected d -> 4 x 4 x 4b; transposed conv s2 -> 11, 4b; (*);
  -> 27, 2b; (*); -> 61, b; (*); -> 120, b / 2; (*); 1 x 1 conv -> 1; tanh.

With ``width_factor = 1`` and 120 x 120 input the parameter counts equal Table 2
exactly (see :data:`PAPER_PARAMETER_COUNTS`).

Rule for other pattern sizes and widths (see :func:`architecture_for`)
-----------------------------------------------------------------------
Let ``n = min(h, w)`` and ``s = n / 120``.

- Kernel: ``k = max(3, 2 * floor(9 s / 2) + 1)`` (the odd kernel at or below
  ``9 s``: 120 -> 9, 96 -> 7, 60 -> 5, 48 -> 3), for every strided and residual layer.
- Encoder: the three stride-2, unpadded convolutions give
  ``m -> floor((m - k) / 2) + 1`` per axis; the head convolution's kernel is whatever
  is left (8 x 8 at 120, 4 x 4 at 60), so the encoder always ends at 1 x 1.
- Decoder: the last transposed convolution ends at exactly ``h`` (``w``); the grids
  before it are the paper's (4, 11, 27, 61) scaled by ``h / 120`` (rounded), each
  clamped, working backwards, to the range one stride-2 transposed convolution can
  grow into the next size. Each layer reaches its size with padding ``p`` and output
  padding ``op`` in {0, 1} solving ``2 (m_in - 1) + k - 2 p + op = m_out``.
  120 gives the paper's 4 -> 11 -> 27 -> 61 -> 120; 60 gives 2 -> 6 -> 14 -> 31 -> 60.
  Any side from 16 pixels up works (tested 16-300, square and not).
- Channels: the paper's ``c = d * f`` (``f`` in {1/8, 1/4, 1/2, 1} of ``d``) becomes
  ``round(max(width_factor * c, min(c, min_channels)))`` (``min_channels`` = 4 by
  default, so width 1 is always Table 2); the bottleneck (head conv ``2d``, the fc
  layers and the latent) is not scaled, so ``d`` keeps its meaning. ``base_channels``
  (if given) replaces ``width_factor`` by ``4 * base_channels / d``: the same
  convolutions for every d (the CPU demo's choice), only the bottleneck follows d. Otherwise
  ``max_base_channels`` (if given) caps the paper's growing width: the first conv gets
  ``b = width_factor * d / 4`` channels but never more than ``max_base_channels``, i.e.
  the effective width factor is ``min(width_factor, 4 * max_base_channels / d)``
  (:func:`effective_width_factor`); the ``min_channels`` floor still applies.

Initialisation (:func:`initialize_`): ``glorot`` (MATLAB's default, the paper's),
``he`` (signal-preserving; trains small models much sooner) or ``torch``.
The reconstruction loss is expressed per 120 x 120 pattern (:func:`l2_scale`).

Variants (``variant["loss"]``)
------------------------------
``vae`` (beta = 1), ``beta_vae`` (KL weighted by ``variant["beta"]``) and
``contrastive`` (two augmented views through the shared encoder / decoder, an MLP
projection head on the latent mean, NT-Xent; see :func:`nt_xent` and :func:`augment`).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from latentebsd.variants import variant_beta

LEAKY_SLOPE = 0.2
PAPER_PATTERN_SIZE = 120
PAPER_KERNEL = 9
#: Decoder spatial sizes of Table 2 before the last (full-size) layer.
PAPER_DECODER_SIZES = (4, 11, 27, 61)
#: (encoder, decoder) parameter counts with biases at 120 x 120, width 1. The d = 16
#: pair is swapped in the paper's table (its 66k / 74k); these are the true counts.
PAPER_PARAMETER_COUNTS = {
    16: (74_412, 66_299),
    32: (296_760, 264_557),
    64: (1_185_264, 1_056_953),
    128: (4_737_504, 4_225_265),
    256: (18_942_912, 16_895_969),
}
PAPER_PIXELS = PAPER_PATTERN_SIZE * PAPER_PATTERN_SIZE


# --------------------------------------------------------------------------- geometry


@dataclass(frozen=True)
class Architecture:
    """Spatial layout of encoder and decoder for one pattern shape.

    Attributes
    ----------
    pattern_shape
        ``(h, w)`` of the input and of the reconstruction.
    kernel
        Side of the square kernel of every strided / residual layer.
    encoder_sizes
        ``(h, w)`` after each of the three strided convolutions.
    head_kernel
        Kernel of the convolution that maps the last feature map to 1 x 1.
    decoder_sizes
        ``(h, w)`` of the decoder's start grid and after each transposed convolution
        (five entries, the last equal to ``pattern_shape``).
    decoder_padding
        ``((p_h, p_w), (op_h, op_w))`` of each of the four transposed convolutions.
    """

    pattern_shape: tuple[int, int]
    kernel: int
    encoder_sizes: tuple[tuple[int, int], ...]
    head_kernel: tuple[int, int]
    decoder_sizes: tuple[tuple[int, int], ...]
    decoder_padding: tuple[tuple[tuple[int, int], tuple[int, int]], ...]


def kernel_for(pattern_shape: Sequence[int]) -> int:
    """Odd kernel size for a pattern shape: 9 at 120, scaled with the smaller side."""
    n = min(int(pattern_shape[0]), int(pattern_shape[1]))
    return max(3, 2 * math.floor(PAPER_KERNEL * n / PAPER_PATTERN_SIZE / 2) + 1)


def _strided_out(m: int, k: int) -> int:
    return (m - k) // 2 + 1


def _transposed_padding(m_in: int, m_out: int, k: int) -> tuple[int, int]:
    """(padding, output_padding) so a stride-2 transposed conv maps m_in to m_out."""
    excess = 2 * (m_in - 1) + k - m_out  # = 2 p - op
    if excess < 0:
        raise ValueError(f"a stride-2, {k}-kernel transposed conv cannot grow {m_in} to {m_out}")
    p = (excess + 1) // 2
    op = 2 * p - excess
    if p > k - 1:
        raise ValueError(f"transposed conv {m_in} -> {m_out} needs padding {p} > kernel - 1")
    return p, op


def _axis_layout(m: int, k: int) -> tuple[list[int], int, list[int], list[tuple[int, int]]]:
    enc = [m]
    for _ in range(3):
        enc.append(_strided_out(enc[-1], k))
    if enc[-1] < 1:
        raise ValueError(f"pattern side {m} is too small for kernel {k}")
    # Backwards from the exact output size: each earlier size is the paper's size scaled
    # to m, clamped to what one stride-2 transposed conv can grow into the next size
    # (unpadded output >= next, padding <= k - 1).
    dec = [m]
    for t_paper in reversed(PAPER_DECODER_SIZES):
        nxt = dec[0]
        lo, hi = max(1, -((k - 2 - nxt) // 2)), (nxt + k) // 2
        target = math.floor(t_paper * m / PAPER_PATTERN_SIZE + 0.5)
        dec.insert(0, min(max(target, lo), hi))
    pads = [_transposed_padding(a, b, k) for a, b in zip(dec[:-1], dec[1:])]
    return enc[1:], enc[-1], dec, pads


def architecture_for(pattern_shape: Sequence[int]) -> Architecture:
    """Layout of the Table 2 network adapted to ``pattern_shape`` (module docstring rule).

    Raises
    ------
    ValueError
        If the pattern is too small for the rule (sides below ~20 pixels) or too large
        for the decoder to reach it.
    """
    h, w = int(pattern_shape[0]), int(pattern_shape[1])
    k = kernel_for((h, w))
    eh, hh, dh, ph = _axis_layout(h, k)
    ew, hw, dw, pw = _axis_layout(w, k)
    return Architecture(
        pattern_shape=(h, w),
        kernel=k,
        encoder_sizes=tuple(zip(eh, ew)),
        head_kernel=(hh, hw),
        decoder_sizes=tuple(zip(dh, dw)),
        decoder_padding=tuple(((a[0], b[0]), (a[1], b[1])) for a, b in zip(ph, pw)),
    )


MIN_SCALED_CHANNELS = 4


def channels(latent_dim: int, fraction: float, width_factor: float, min_channels: int = MIN_SCALED_CHANNELS) -> int:
    """Channels of a layer the paper gives as ``fraction * d``, scaled by the width.

    Scaling never goes below ``min(paper width, min_channels)`` (so width 1 is always
    the paper's): 1- and 2-channel feature maps cannot carry bands, and oneDNN runs
    them several times slower than 4 channels.
    """
    paper = latent_dim * fraction
    floor = min(paper, min_channels)
    return max(1, int(math.floor(max(width_factor * paper, floor) + 0.5)))


# --------------------------------------------------------------------------- modules


class ResidualConv(nn.Module):
    """Same-size convolution with a shortcut: ``x + LeakyReLU(conv(x))`` (Table 2's *)."""

    def __init__(self, ch: int, kernel: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(ch, ch, kernel, padding=kernel // 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + F.leaky_relu(self.conv(x), LEAKY_SLOPE)


class PointwiseConv(nn.Conv2d):
    """1 x 1 convolution computed as a channel contraction (same parameters as Conv2d).

    oneDNN's CPU kernels for a 1 x 1 convolution to a single channel are pathologically
    slow (they took 60 % of a small model's training step); the contraction is exact
    up to float summation order.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.einsum("nchw,oc->nohw", x, self.weight[:, :, 0, 0])
        return out + self.bias.view(1, -1, 1, 1)


class Encoder(nn.Module):
    """Pattern -> (mean, log-variance) of the latent posterior.

    Parameters
    ----------
    latent_dim
        d, the number of latent dimensions.
    pattern_shape
        ``(h, w)`` of the input patterns (120 x 120 in the paper).
    width_factor
        Scales every convolution's channels (1 = the paper).
    """

    def __init__(
        self, latent_dim: int, pattern_shape: Sequence[int] = (120, 120), width_factor: float = 1.0,
        min_channels: int = MIN_SCALED_CHANNELS,
    ) -> None:
        super().__init__()
        arch = architecture_for(pattern_shape)
        k = arch.kernel
        c1, c2, c3 = (channels(latent_dim, f, width_factor, min_channels) for f in (0.25, 0.5, 1.0))
        self.latent_dim = int(latent_dim)
        self.pattern_shape = arch.pattern_shape
        self.features = nn.Sequential(
            nn.Conv2d(1, c1, k, stride=2), nn.LeakyReLU(LEAKY_SLOPE), ResidualConv(c1, k),
            nn.Conv2d(c1, c2, k, stride=2), nn.LeakyReLU(LEAKY_SLOPE), ResidualConv(c2, k),
            nn.Conv2d(c2, c3, k, stride=2), nn.LeakyReLU(LEAKY_SLOPE), ResidualConv(c3, k),
            nn.Conv2d(c3, 2 * latent_dim, arch.head_kernel), nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.fc = nn.Linear(2 * latent_dim, 2 * latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (N, h, w) or (N, 1, h, w). Returns ``(mean, logvar)``, each (N, d)."""
        if x.dim() == 3:
            x = x.unsqueeze(1)
        out = self.fc(self.features(x).flatten(1))
        mean, logvar = out.chunk(2, dim=1)
        return mean, logvar


class Decoder(nn.Module):
    """Latent (N, d) -> pattern (N, 1, h, w) in [-1, 1].

    Parameters
    ----------
    latent_dim, pattern_shape, width_factor
        As for :class:`Encoder`.
    """

    def __init__(
        self, latent_dim: int, pattern_shape: Sequence[int] = (120, 120), width_factor: float = 1.0,
        min_channels: int = MIN_SCALED_CHANNELS,
    ) -> None:
        super().__init__()
        arch = architecture_for(pattern_shape)
        k = arch.kernel
        ch = [channels(latent_dim, f, width_factor, min_channels) for f in (1.0, 1.0, 0.5, 0.25, 0.125)]
        self.latent_dim = int(latent_dim)
        self.pattern_shape = arch.pattern_shape
        self.start = (ch[0], *arch.decoder_sizes[0])
        self.fc = nn.Linear(latent_dim, ch[0] * arch.decoder_sizes[0][0] * arch.decoder_sizes[0][1])
        layers: list[nn.Module] = []
        for i, (pad, out_pad) in enumerate(arch.decoder_padding):
            layers += [
                nn.ConvTranspose2d(ch[i], ch[i + 1], k, stride=2, padding=pad, output_padding=out_pad),
                nn.LeakyReLU(LEAKY_SLOPE),
                ResidualConv(ch[i + 1], k),
            ]
        layers += [PointwiseConv(ch[-1], 1, 1), nn.Tanh()]
        self.features = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.features(self.fc(z).view(z.shape[0], *self.start))


class ProjectionHead(nn.Module):
    """SimCLR's MLP projection ``g``: Linear -> ReLU -> Linear, used only by the loss."""

    def __init__(self, latent_dim: int, projection_dim: int = 64, hidden_dim: int | None = None) -> None:
        super().__init__()
        hidden = int(hidden_dim or latent_dim)
        self.net = nn.Sequential(
            nn.Linear(latent_dim, hidden), nn.ReLU(), nn.Linear(hidden, projection_dim)
        )

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h)


class VAE(nn.Module):
    """Encoder + sampling + decoder, and a projection head for the contrastive variant."""

    def __init__(self, encoder: Encoder, decoder: Decoder, projection: ProjectionHead | None = None) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self.projection = projection

    def forward(
        self, x: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns ``(reconstruction (N, 1, h, w), mean, logvar)``."""
        mean, logvar = self.encoder(x)
        return self.decoder(reparameterize(mean, logvar, generator)), mean, logvar


def reparameterize(
    mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """The sampling layer: ``z = mean + exp(logvar / 2) * eps``, eps ~ N(0, I) from ``generator``."""
    eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
    return mean + torch.exp(0.5 * logvar) * eps


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters (weights and biases)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


INITS = ("glorot", "he", "torch")


def build_model(
    variant: dict[str, Any],
    pattern_shape: Sequence[int],
    width_factor: float = 1.0,
    projection_dim: int = 64,
    projection_hidden: int | None = None,
    init: str = "glorot",
    base_channels: int | None = None,
    min_channels: int = MIN_SCALED_CHANNELS,
    max_base_channels: int | None = None,
) -> VAE:
    """The VAE a variant asks for, initialised.

    Parameters
    ----------
    variant
        ``{"loss": "vae" | "beta_vae" | "contrastive", "latent_dim": d, "beta": b}``.
    pattern_shape
        ``(h, w)`` of the patterns.
    width_factor
        Channel scale (1 = the paper's Table 2).
    projection_dim, projection_hidden
        Output and hidden width of the contrastive projection head (hidden defaults to d).
    init
        ``"glorot"`` (MATLAB's default, hence the paper's), ``"he"`` (keeps the
        signal's scale through the 17 layers, so small models leave the initial plateau
        sooner) or ``"torch"`` (PyTorch's layer defaults); see :func:`initialize_`.
    base_channels
        If given, overrides ``width_factor`` with ``4 * base_channels / d``: every d gets
        the same convolutions (encoder ``base, 2 base, 4 base``), only the bottleneck
        changes with d. The paper instead grows the width with d (``base = d / 4``).
    min_channels
        Width scaling never takes a layer below ``min(its paper width, min_channels)``.
    max_base_channels
        Without ``base_channels``: the width still grows with d as in the paper
        (``b = width_factor * d / 4``) up to this many first-conv channels, so the
        effective width factor is ``min(width_factor, 4 * max_base_channels / d)``.
        Ignored when ``base_channels`` is given.
    """
    variant_beta(variant)  # validates the loss name and beta
    d = int(variant["latent_dim"])
    if d < 1:
        raise ValueError(f"latent_dim must be >= 1, got {d}")
    width_factor = effective_width_factor(d, width_factor, base_channels, max_base_channels)
    projection = (
        ProjectionHead(d, projection_dim, projection_hidden) if variant["loss"] == "contrastive" else None
    )
    model = VAE(
        Encoder(d, pattern_shape, width_factor, min_channels),
        Decoder(d, pattern_shape, width_factor, min_channels),
        projection,
    )
    return initialize_(model, init)


def effective_width_factor(latent_dim: int, width_factor: float, base_channels: int | None = None,
                           max_base_channels: int | None = None) -> float:
    """The width factor a d-dimensional model is built with.

    ``base_channels`` (if given) wins: ``4 * base_channels / d`` (the same convolutions
    for every d). Otherwise the paper's growing width ``width_factor``, capped so that
    the first conv has at most ``max_base_channels`` channels:
    ``min(width_factor, 4 * max_base_channels / d)``.
    """
    d = int(latent_dim)
    if base_channels is not None:
        return 4.0 * int(base_channels) / d
    width_factor = float(width_factor)
    if max_base_channels is not None:
        width_factor = min(width_factor, 4.0 * int(max_base_channels) / d)
    return width_factor


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)


def build_from_training(variant: dict[str, Any], pattern_shape: Sequence[int],
                        training: dict[str, Any]) -> VAE:
    """The model of ``variant`` as the ``training`` settings size and initialise it
    (``width_factor``, ``base_channels`` or ``max_base_channels``, ``min_channels``,
    ``init``, the contrastive ``projection_dim``)."""
    return build_model(
        variant, pattern_shape, effective_width(variant, training),
        projection_dim=int(training["contrastive"]["projection_dim"]),
        init=training.get("init", "glorot"),
        min_channels=int(training.get("min_channels", MIN_SCALED_CHANNELS)),
    )


def effective_width(variant: dict[str, Any], training: dict[str, Any]) -> float:
    """The width factor the model of ``variant`` is built with under ``training``
    (what the weights file records as ``meta["width_factor"]``)."""
    return effective_width_factor(
        int(variant["latent_dim"]), float(training["width_factor"]),
        _optional_int(training.get("base_channels")), _optional_int(training.get("max_base_channels")),
    )


def fan_in(m: nn.Module) -> float:
    """Inputs summed into one output value of a conv / transposed conv / linear layer
    (a stride-s transposed conv sees 1 / s^2 of its kernel)."""
    if isinstance(m, nn.Linear):
        return float(m.in_features)
    kh, kw = m.kernel_size
    if isinstance(m, nn.ConvTranspose2d):
        return m.in_channels * kh * kw / (m.stride[0] * m.stride[1])
    return m.in_channels / m.groups * kh * kw


def initialize_(module: nn.Module, init: str = "glorot") -> nn.Module:
    """Re-initialise every conv / transposed conv / linear layer of ``module`` in place.

    ``"glorot"``: MATLAB's default (the paper's toolbox), Glorot-uniform weights and zero
    biases. ``"torch"``: leave PyTorch's defaults (they shrink the input-dependent
    signal ~1e5-fold through the decoder: long initial plateau). ``"he"``: He-normal
    weights for LeakyReLU(0.2) (fan-in as computed: a stride-2 transposed conv sums a
    quarter of its kernel) on the plain layers, zero weights on the residual branches
    (each (*) block starts as the identity, so the 7 shortcuts do not multiply the
    variance and saturate the output tanh), Glorot on the 1 x 1 output layer; zero biases.
    """
    if init not in INITS:
        raise ValueError(f"init must be one of {INITS}, got {init!r}")
    if init == "torch":
        return module
    residual = {id(m.conv) for m in module.modules() if isinstance(m, ResidualConv)}
    for m in module.modules():
        if not isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
            continue
        if init == "glorot" or isinstance(m, PointwiseConv):
            nn.init.xavier_uniform_(m.weight)
        elif id(m) in residual:
            nn.init.zeros_(m.weight)
        else:
            nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / (1.0 + LEAKY_SLOPE**2) / fan_in(m)))
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    return module


# --------------------------------------------------------------------------- losses


def masked_l2(recon: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-pattern sum of squared errors over the pixels where ``mask`` is true.

    A sum (not a mean) over pixels keeps the ELBO's balance between reconstruction and
    KL, so that beta means what it means in the paper (beta = 50 loses bands).
    ``torch.where`` rather than a product: a non-finite value outside the mask cannot leak.

    Returns
    -------
    Tensor
        Shape (N,), float32.
    """
    recon = recon.reshape(target.shape[0], *mask.shape).float()
    diff = torch.where(mask, recon - target.reshape(recon.shape).float(), 0.0)
    return diff.square().sum(dim=(1, 2))


def l2_scale(pattern_shape: Sequence[int]) -> float:
    """Factor that expresses a pattern's sum of squared errors per 120 x 120 pattern.

    A pattern binned to h x w carries the errors of a 120 x 120 one on fewer pixels
    (a smooth error summed over 60 x 60 pixels is a quarter of its 120 x 120 sum). Scaling
    by ``120 * 120 / (h * w)`` keeps the paper's L2 : KL balance, hence beta's meaning,
    at any pattern size; it is exactly 1 at the paper's size.
    """
    return PAPER_PIXELS / float(int(pattern_shape[0]) * int(pattern_shape[1]))


def kl_divergence(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Per-pattern KL(N(mean, exp(logvar)) || N(0, I)), summed over latent dims; shape (N,)."""
    mean, logvar = mean.float(), logvar.float()
    return -0.5 * (1.0 + logvar - mean.square() - logvar.exp()).sum(dim=1)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.5) -> torch.Tensor:
    """NT-Xent / InfoNCE (SimCLR) between two views: row i of ``z1`` and ``z2`` are a pair.

    Each of the 2N projections must pick its partner among the other 2N - 1 by cosine
    similarity / temperature; the loss is the mean cross-entropy over the 2N anchors.
    """
    n = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2]).float(), dim=1)
    sim = z @ z.T / temperature
    sim = sim.masked_fill(torch.eye(2 * n, dtype=torch.bool, device=z.device), float("-inf"))
    target = torch.cat([torch.arange(n, 2 * n), torch.arange(0, n)]).to(z.device)
    return F.cross_entropy(sim, target)


def augment(
    x: torch.Tensor,
    mask: torch.Tensor,
    generator: torch.Generator | None,
    salt_pepper: float = 0.02,
    gaussian_sigma: float = 0.05,
    gamma_range: Sequence[float] = (0.7, 1.5),
) -> torch.Tensor:
    """One view: gamma change, Gaussian noise and salt-and-pepper noise, superimposed.

    Only acquisition-like noise (the paper rules out crops, rotations and blur, which
    change the physics). Gamma acts on the [0, 1] intensity, ``u ** g`` with ``log g``
    uniform in ``log gamma_range`` per pattern; then additive N(0, sigma^2); then a
    fraction ``salt_pepper`` of pixels set to -1 or +1 (half each). The result is
    clipped to [-1, 1] and zero outside the mask, like the un-augmented patterns.

    Parameters
    ----------
    x
        (N, h, w) patterns in [-1, 1].
    mask
        (h, w) bool, True on the detector screen.
    generator
        Source of all randomness (on ``x``'s device).
    """
    n = x.shape[0]
    kw = {"generator": generator, "device": x.device, "dtype": torch.float32}
    lo, hi = math.log(gamma_range[0]), math.log(gamma_range[1])
    gamma = torch.exp(lo + (hi - lo) * torch.rand((n, 1, 1), **kw))
    u = ((x.float() + 1.0) * 0.5).clamp(0.0, 1.0).pow(gamma)
    y = 2.0 * u - 1.0 + gaussian_sigma * torch.randn(x.shape, **kw)
    r = torch.rand(x.shape, **kw)
    y = torch.where(r < 0.5 * salt_pepper, -1.0, y)
    y = torch.where(r > 1.0 - 0.5 * salt_pepper, 1.0, y)
    return torch.where(mask, y.clamp(-1.0, 1.0), 0.0)


# --------------------------------------------------------------------------- inference


def _as_tensor(data: np.ndarray | torch.Tensor, dtype: torch.dtype,
               device: str | torch.device) -> torch.Tensor:
    """``data`` (a numpy array, or a tensor on any device) as a ``dtype`` tensor on ``device``."""
    if isinstance(data, torch.Tensor):
        return data.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(data), dtype=dtype).to(device)


@contextlib.contextmanager
def _inference_layout(device: str | torch.device) -> Iterator[torch.memory_format]:
    """The memory format (and cuDNN autotuning) of encode / decode on ``device``.

    On CUDA: channels-last tensors and cuDNN's autotuner (the stage calls the same
    shapes thousands of times), as training runs; measured by ``benchmarks/gpu_check.py``.
    The CPU keeps the default layout, so that CPU results stay byte-identical to the
    runs before.
    """
    if torch.device(device).type != "cuda":
        yield torch.contiguous_format
        return
    saved = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = True
    try:
        yield torch.channels_last
    finally:
        torch.backends.cudnn.benchmark = saved


@torch.no_grad()
def encode_patterns(
    encoder: Encoder, patterns: np.ndarray | torch.Tensor, batch_size: int = 1024,
    device: str | torch.device = "cpu", mask: np.ndarray | torch.Tensor | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Latent (mean, logvar) of many patterns, batch by batch; each (N, d) float32.

    ``mask`` (h, w), when given, zeroes the pixels off the screen as training did.
    """
    m = None if mask is None else _as_tensor(mask, torch.bool, device)
    means, logvars = [], []
    with _inference_layout(device) as layout:
        encoder = encoder.to(device=device, memory_format=layout).eval()
        for start in range(0, len(patterns), batch_size):
            x = _as_tensor(patterns[start:start + batch_size], torch.float32, device)
            if m is not None:
                x = torch.where(m, x, 0.0)
            mean, logvar = encoder(x.unsqueeze(1).contiguous(memory_format=layout))
            means.append(mean.float().cpu().numpy())
            logvars.append(logvar.float().cpu().numpy())
    d = encoder.latent_dim
    return (
        np.concatenate(means) if means else np.zeros((0, d), np.float32),
        np.concatenate(logvars) if logvars else np.zeros((0, d), np.float32),
    )


@torch.no_grad()
def decode_latents(
    decoder: Decoder, latents: np.ndarray | torch.Tensor, batch_size: int = 1024,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Patterns (N, h, w) float32 in [-1, 1] decoded from latents (N, d)."""
    out = []
    with _inference_layout(device) as layout:
        decoder = decoder.to(device=device, memory_format=layout).eval()
        for start in range(0, len(latents), batch_size):
            z = _as_tensor(latents[start:start + batch_size], torch.float32, device)
            out.append(decoder(z)[:, 0].float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, *decoder.pattern_shape), np.float32)
