"""Architecture (Table 2), size rule, losses and augmentations of latentebsd.models."""

from __future__ import annotations

import pytest
import torch

from latentebsd.models import (
    PAPER_PARAMETER_COUNTS,
    Decoder,
    Encoder,
    augment,
    architecture_for,
    build_from_training,
    build_model,
    channels,
    count_parameters,
    decode_latents,
    effective_width,
    effective_width_factor,
    encode_patterns,
    initialize_,
    kernel_for,
    kl_divergence,
    l2_scale,
    masked_l2,
    nt_xent,
    reparameterize,
    variant_beta,
)


@pytest.mark.parametrize("d", sorted(PAPER_PARAMETER_COUNTS))
def test_parameter_counts_equal_table2(d: int) -> None:
    # Built on the meta device: counts without allocating 36 M parameters.
    with torch.device("meta"):
        enc, dec = Encoder(d), Decoder(d)
    assert (count_parameters(enc), count_parameters(dec)) == PAPER_PARAMETER_COUNTS[d]


def test_paper_counts_include_the_swapped_d16_pair() -> None:
    assert PAPER_PARAMETER_COUNTS[16] == (74_412, 66_299)


def test_120_layout_is_table2() -> None:
    arch = architecture_for((120, 120))
    assert arch.kernel == 9
    assert [s[0] for s in arch.encoder_sizes] == [56, 24, 8]
    assert arch.head_kernel == (8, 8)
    assert [s[0] for s in arch.decoder_sizes] == [4, 11, 27, 61, 120]


def test_120_forward_shapes_and_intermediate_sizes() -> None:
    torch.manual_seed(0)
    enc, dec = Encoder(16), Decoder(16)
    x = torch.zeros(2, 120, 120)
    sizes = []
    h = x.unsqueeze(1)
    for layer in enc.features:
        h = layer(h)
        sizes.append(h.shape[-1])
    assert sorted(set(sizes), reverse=True) == [56, 24, 8, 1]
    mean, logvar = enc(x)
    assert mean.shape == logvar.shape == (2, 16)
    h = dec.fc(mean).view(2, *dec.start)
    assert h.shape[-1] == 4
    out_sizes = []
    for layer in dec.features:
        h = layer(h)
        out_sizes.append(h.shape[-1])
    assert sorted(set(out_sizes)) == [11, 27, 61, 120]
    assert dec(mean).shape == (2, 1, 120, 120)


@pytest.mark.parametrize("shape", [(60, 60), (48, 48), (64, 80), (96, 96), (16, 16), (200, 200)])
def test_other_sizes_map_to_1x1_and_back_exactly(shape: tuple[int, int]) -> None:
    torch.manual_seed(0)
    model = build_model({"loss": "vae", "latent_dim": 8}, shape, width_factor=0.25)
    recon, mean, logvar = model(torch.rand(3, *shape) * 2 - 1)
    assert recon.shape == (3, 1, *shape)
    assert mean.shape == logvar.shape == (3, 8)
    assert recon.abs().max() <= 1.0  # tanh output


def test_every_side_from_16_to_300_is_supported() -> None:
    for n in range(16, 301):
        arch = architecture_for((n, n))
        assert arch.decoder_sizes[-1] == (n, n)
        assert arch.head_kernel[0] >= 1
    with pytest.raises(ValueError):
        architecture_for((12, 12))


def test_60_layout_and_kernel_rule() -> None:
    assert [kernel_for((n, n)) for n in (120, 96, 60, 48, 16)] == [9, 7, 5, 3, 3]
    arch = architecture_for((60, 60))
    assert [s[0] for s in arch.encoder_sizes] == [28, 12, 4]
    assert [s[0] for s in arch.decoder_sizes] == [2, 6, 14, 31, 60]


def test_width_factor_scales_channels_with_floor() -> None:
    assert channels(128, 0.25, 1.0) == 32
    assert channels(128, 0.25, 0.25) == 8
    assert channels(128, 0.125, 0.125) == 4  # floor of 4 channels
    assert channels(16, 0.125, 0.25) == 2  # never above the paper's own width
    assert channels(128, 0.125, 0.125, min_channels=8) == 8
    assert channels(16, 0.25, 1.0, min_channels=64) == 4  # width 1 is always Table 2
    full = count_parameters(build_model({"loss": "vae", "latent_dim": 32}, (60, 60), 1.0))
    slim = count_parameters(build_model({"loss": "vae", "latent_dim": 32}, (60, 60), 0.25))
    assert slim < full / 4


def test_variants_and_beta_validation() -> None:
    assert variant_beta({"loss": "vae", "latent_dim": 4}) == 1.0
    assert variant_beta({"loss": "beta_vae", "latent_dim": 4, "beta": 15}) == 15.0
    with pytest.raises(ValueError):
        variant_beta({"loss": "beta_vae", "latent_dim": 4})
    with pytest.raises(ValueError):
        variant_beta({"loss": "vae", "latent_dim": 4, "beta": 3})
    with pytest.raises(ValueError):
        variant_beta({"loss": "ae", "latent_dim": 4})
    con = build_model({"loss": "contrastive", "latent_dim": 8}, (32, 32), 0.25, projection_dim=5)
    assert con.projection is not None and con.projection(torch.zeros(2, 8)).shape == (2, 5)
    assert build_model({"loss": "vae", "latent_dim": 8}, (32, 32), 0.25).projection is None


def test_masked_l2_ignores_pixels_off_the_mask() -> None:
    g = torch.Generator().manual_seed(0)
    mask = torch.zeros(10, 10, dtype=torch.bool)
    mask[2:8, 3:9] = True
    target = torch.rand(4, 10, 10, generator=g)
    recon = torch.rand(4, 1, 10, 10, generator=g)
    base = masked_l2(recon, target, mask)
    target2, recon2 = target.clone(), recon.clone()
    target2[:, ~mask] = 1e6
    recon2[:, 0][:, ~mask] = float("nan")
    assert torch.equal(masked_l2(recon2, target2, mask), base)
    expected = ((recon[:, 0] - target) ** 2)[:, mask].sum(dim=1)
    torch.testing.assert_close(base, expected)


def test_kl_is_zero_at_the_prior_and_positive_elsewhere() -> None:
    zeros = torch.zeros(3, 5)
    assert torch.equal(kl_divergence(zeros, zeros), torch.zeros(3))
    assert (kl_divergence(torch.ones(3, 5), zeros) > 0).all()
    # Closed form for one dimension: 0.5 (mu^2 + s^2 - 1 - log s^2).
    mu, logvar = torch.tensor([[0.5]]), torch.tensor([[-1.0]])
    expected = 0.5 * (0.25 + torch.exp(torch.tensor(-1.0)) - 1 + 1)
    torch.testing.assert_close(kl_divergence(mu, logvar), expected.reshape(1))


def test_reparameterize_is_seeded() -> None:
    mean, logvar = torch.zeros(4, 3), torch.zeros(4, 3)
    a = reparameterize(mean, logvar, torch.Generator().manual_seed(1))
    b = reparameterize(mean, logvar, torch.Generator().manual_seed(1))
    c = reparameterize(mean, logvar, torch.Generator().manual_seed(2))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert torch.equal(reparameterize(mean + 2, torch.full((4, 3), -1e4), None), mean + 2)


def test_contrastive_loss_lower_for_matched_than_shuffled_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    z = torch.randn(32, 16, generator=g)
    z2 = z + 0.1 * torch.randn(32, 16, generator=g)
    shuffled = z2[torch.randperm(32, generator=g)]
    matched_loss, shuffled_loss = nt_xent(z, z2, 0.5), nt_xent(z, shuffled, 0.5)
    assert matched_loss < shuffled_loss - 1.0
    # Symmetric in the two views.
    torch.testing.assert_close(nt_xent(z, z2, 0.5), nt_xent(z2, z, 0.5))


def test_augment_is_seeded_bounded_masked_and_noisy() -> None:
    mask = torch.zeros(20, 20, dtype=torch.bool)
    mask[3:17, 3:17] = True
    x = torch.where(mask, torch.rand(5, 20, 20, generator=torch.Generator().manual_seed(0)) * 2 - 1, 0.0)
    a = augment(x, mask, torch.Generator().manual_seed(3), 0.05, 0.05, (0.7, 1.5))
    b = augment(x, mask, torch.Generator().manual_seed(3), 0.05, 0.05, (0.7, 1.5))
    c = augment(x, mask, torch.Generator().manual_seed(4), 0.05, 0.05, (0.7, 1.5))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.abs().max() <= 1.0
    assert torch.equal(a[:, ~mask], torch.zeros_like(a[:, ~mask]))
    assert (a[:, mask] == 1.0).float().mean() > 0.01  # salt
    assert (a[:, mask] == -1.0).float().mean() > 0.01  # pepper
    # No noise at all leaves the pattern unchanged.
    same = augment(x, mask, torch.Generator().manual_seed(3), 0.0, 0.0, (1.0, 1.0))
    torch.testing.assert_close(same, x)


def test_encode_decode_helpers_batch_and_mask() -> None:
    torch.manual_seed(0)
    model = build_model({"loss": "vae", "latent_dim": 6}, (32, 32), 0.25).eval()
    x = (torch.rand(7, 32, 32) * 2 - 1).numpy()
    mean, logvar = encode_patterns(model.encoder, x, batch_size=3)
    with torch.no_grad():
        ref, _ = model.encoder(torch.from_numpy(x))
    torch.testing.assert_close(torch.from_numpy(mean), ref, atol=1e-5, rtol=1e-5)
    assert logvar.shape == (7, 6)
    mask = torch.zeros(32, 32, dtype=torch.bool)
    mask[4:28, 4:28] = True
    x2 = x.copy()
    x2[:, ~mask.numpy()] = 0.9
    m1, _ = encode_patterns(model.encoder, x, mask=mask.numpy())
    m2, _ = encode_patterns(model.encoder, x2, mask=mask.numpy())
    assert (m1 == m2).all()
    out = decode_latents(model.decoder, mean, batch_size=4)
    assert out.shape == (7, 32, 32) and abs(out).max() <= 1.0


def test_l2_scale_is_per_120x120_pattern() -> None:
    assert l2_scale((120, 120)) == 1.0
    assert l2_scale((60, 60)) == 4.0


def test_base_channels_gives_every_d_the_same_convolutions() -> None:
    small = build_model({"loss": "vae", "latent_dim": 16}, (60, 60), base_channels=8)
    large = build_model({"loss": "vae", "latent_dim": 256}, (60, 60), base_channels=8)
    convs = [m.out_channels for m in small.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs[:6] == [8, 8, 16, 16, 32, 32]
    assert convs[:6] == [m.out_channels for m in large.encoder.modules() if isinstance(m, torch.nn.Conv2d)][:6]
    assert small.encoder.fc.out_features == 32 and large.encoder.fc.out_features == 512


def _conv_widths(model: torch.nn.Module) -> tuple[list[int], list[int]]:
    """Encoder conv outputs (b, b, 2b, 2b, 4b, 4b, head 2d) and decoder transposed-conv outputs."""
    enc = [m.out_channels for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)][:7]
    dec = [m.out_channels for m in model.decoder.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    return enc, dec


def _training(**overrides: object) -> dict:
    from latentebsd.config import section

    return section("training", overrides)


def _widths_for(b: int, d: int) -> tuple[list[int], list[int]]:
    """Table 2's channels with first-conv width b (decoder: 4b, 2b, b, b / 2 floored at min(paper, 4))."""
    half = max(b // 2, min(d // 8, 4))
    return [b, b, 2 * b, 2 * b, 4 * b, 4 * b, 2 * d], [4 * b, 2 * b, b, half]


#: first-conv channels b for d = 16 ... 256 under a cap (paper: b = d / 4)
CAPPED_B = {
    8: {16: 4, 32: 8, 64: 8, 128: 8, 256: 8},
    16: {16: 4, 32: 8, 64: 16, 128: 16, 256: 16},
    None: {16: 4, 32: 8, 64: 16, 128: 32, 256: 64},
}


@pytest.mark.parametrize("cap", [8, 16, None])
@pytest.mark.parametrize("d", [16, 32, 64, 128, 256])
def test_max_base_channels_caps_the_growing_width(cap: int | None, d: int) -> None:
    training = _training(max_base_channels=cap)
    assert training["base_channels"] is None and training["width_factor"] == 1.0
    with torch.device("meta"):
        model = build_from_training({"loss": "vae", "latent_dim": d}, (60, 60), training)
    b = CAPPED_B[cap][d]
    assert _conv_widths(model) == _widths_for(b, d)
    assert effective_width({"latent_dim": d}, training) == min(1.0, 4 * cap / d if cap else 1.0)
    assert effective_width({"latent_dim": d}, training) * d / 4 == b  # what the weights file records


def test_no_cap_is_table2_and_the_cap_composes_with_width_factor() -> None:
    with torch.device("meta"):
        model = build_from_training({"loss": "vae", "latent_dim": 64}, (120, 120), _training())
    assert (count_parameters(model.encoder), count_parameters(model.decoder)) == PAPER_PARAMETER_COUNTS[64]
    # width 0.5 halves the paper's b; the cap only bites above it
    assert effective_width_factor(64, 0.5, max_base_channels=16) == 0.5  # b = 8 < 16
    assert effective_width_factor(256, 0.5, max_base_channels=16) == 0.25  # b = 32 -> 16
    assert effective_width_factor(16, 2.0, max_base_channels=100) == 2.0


def test_base_channels_wins_over_the_cap() -> None:
    training = _training(base_channels=8, max_base_channels=2)
    for d in (16, 256):
        with torch.device("meta"):
            model = build_from_training({"loss": "vae", "latent_dim": d}, (60, 60), training)
        assert _conv_widths(model)[0][:6] == [8, 8, 16, 16, 32, 32]
        assert effective_width({"latent_dim": d}, training) == 32 / d


def test_cap_keeps_the_min_channels_floor() -> None:
    with torch.device("meta"):
        model = build_from_training({"loss": "vae", "latent_dim": 256}, (60, 60), _training(max_base_channels=1))
        wide_floor = build_from_training({"loss": "vae", "latent_dim": 256}, (60, 60),
                                         _training(max_base_channels=1, min_channels=8))
    # b = 1 requested: every scaled layer stays at min(paper width, min_channels)
    assert _conv_widths(model) == ([4, 4, 4, 4, 4, 4, 512], [4, 4, 4, 4])
    assert _conv_widths(wide_floor) == ([8, 8, 8, 8, 8, 8, 512], [8, 8, 8, 8])


def test_max_base_channels_is_validated() -> None:
    from latentebsd.config import ConfigError

    with pytest.raises(ConfigError, match=r"training\.max_base_channels"):
        _training(max_base_channels=0)
    assert _training()["max_base_channels"] is None


def test_weights_file_rebuilds_a_capped_model(tmp_path) -> None:
    from latentebsd.io.weights import load_model, save_weights

    variant = {"loss": "vae", "latent_dim": 64}
    training = _training(max_base_channels=4, init="he")
    torch.manual_seed(0)
    model = build_from_training(variant, (32, 32), training)
    meta = {"variant": variant, "pattern_shape": [32, 32], "width_factor": effective_width(variant, training),
            "projection_dim": 64, "training": training}
    save_weights(tmp_path / "w.pt", model, meta)
    enc, dec, back = load_model(tmp_path / "w.pt")
    assert back["width_factor"] == 0.25
    assert [m.out_channels for m in enc.modules() if isinstance(m, torch.nn.Conv2d)][:2] == [4, 4]
    # a file without the training settings rebuilds from the recorded effective width alone
    save_weights(tmp_path / "w2.pt", model, {k: v for k, v in meta.items() if k != "training"})
    enc2, _, _ = load_model(tmp_path / "w2.pt")
    assert count_parameters(enc2) == count_parameters(enc)


@pytest.mark.parametrize("init", ["glorot", "he", "torch"])
def test_inits_are_seeded_and_he_keeps_the_signal(init: str) -> None:
    def build() -> torch.nn.Module:
        torch.manual_seed(0)
        return build_model({"loss": "vae", "latent_dim": 32}, (60, 60), 0.5, init=init)

    a, b = build(), build()
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    if init != "torch":
        assert all(not m.bias.detach().any() for m in a.modules() if isinstance(m, torch.nn.Conv2d))
    if init == "he":
        x = torch.rand(64, 60, 60, generator=torch.Generator().manual_seed(1)) * 2 - 1
        with torch.no_grad():
            mean, _ = a.encoder(x)
        # Input-dependent spread of the latent mean stays O(1) (PyTorch's default: ~1e-2).
        assert float(mean.std(dim=0).mean()) > 0.1
    with pytest.raises(ValueError):
        initialize_(a, "xavier")


def test_encode_and_decode_take_tensors_on_any_device():
    """A tensor that numpy cannot read (as a CUDA tensor) is moved, not converted: the
    old ``np.asarray`` path raised ``can't convert cuda:0 device type tensor to numpy``."""
    import numpy as np

    from latentebsd.models import decode_latents

    class DeviceTensor(torch.Tensor):
        def __array__(self, *args, **kwargs):
            raise TypeError("can't convert cuda:0 device type tensor to numpy")

    torch.manual_seed(0)
    model = build_model({"loss": "vae", "latent_dim": 4}, (32, 32), width_factor=0.25)
    x = torch.rand(5, 32, 32) * 2 - 1
    mean, logvar = encode_patterns(model.encoder, x.numpy(), batch_size=2)
    mean_t, logvar_t = encode_patterns(model.encoder, x.as_subclass(DeviceTensor), batch_size=2)
    np.testing.assert_array_equal(mean, mean_t)
    np.testing.assert_array_equal(logvar, logvar_t)
    z = torch.from_numpy(mean).as_subclass(DeviceTensor)
    np.testing.assert_array_equal(decode_latents(model.decoder, z, 3), decode_latents(model.decoder, mean, 3))
