"""Training: determinism, resume after a kill, mask, outputs, CPU fallback, scripts."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from latentebsd import train as tr
from latentebsd.config import ConfigError, section
from latentebsd.io.sample import read_sample
from latentebsd.io.weights import load_model
from latentebsd.models import build_from_training, build_model

SHAPE = (32, 32)
REPO = Path(__file__).resolve().parents[1]


def _patterns(n: int, rng: np.random.Generator, mask: np.ndarray) -> np.ndarray:
    """Smooth band-like patterns: a shared background plus three random bright lines."""
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]] / SHAPE[0] - 0.5
    out = np.empty((n, *SHAPE), np.float32)
    for i in range(n):
        p = 0.3 * np.cos(3 * yy)
        for _ in range(3):
            theta, rho = rng.uniform(0, np.pi), rng.uniform(-0.3, 0.3)
            dist = xx * np.cos(theta) + yy * np.sin(theta) - rho
            p = p + 0.5 * np.exp(-(dist / 0.05) ** 2)
        out[i] = np.clip(p - 0.4, -1, 1)
    out[:, ~mask] = 0.0
    return out


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[: SHAPE[0], : SHAPE[1]]
    mask = (yy - 15.5) ** 2 + (xx - 15.5) ** 2 <= 15.5**2
    path = tmp_path_factory.mktemp("data") / "dataset.h5"
    with h5py.File(path, "w") as f:
        f["train"] = _patterns(80, rng, mask)
        f["val"] = _patterns(24, rng, mask)
        f["mask"] = mask
    return path


# The plain paper optimiser (no warm-up, no clipping) unless a test asks for them:
# the schema's 2000-step warm-up would leave these 15 - 30-step runs untrained.
TRAINING = {
    "epochs": 3, "batch_size": 16, "width_factor": 0.25, "eval_batch_size": 10,
    "lr_warmup_steps": 0, "grad_clip_norm": None, "contrastive": {"projection_dim": 8},
}
VAE = {"loss": "vae", "latent_dim": 4}
CONTRASTIVE = {"loss": "contrastive", "latent_dim": 4}


def _training(**overrides: Any) -> dict[str, Any]:
    """The validated ``training`` section of the tests' small runs."""
    return section("training", {**TRAINING, **overrides})


def _run(dataset: Path, out: Path, variant: dict[str, Any] = VAE, seed: int = 0, **training: Any) -> dict[str, Path]:
    paths = {k: out / f"{k}.{ext}" for k, ext in
             (("weights", "pt"), ("losses", "csv"), ("plot", "png"), ("checkpoint", "pt"))}
    tr.train_variant(
        dataset, variant, _training(**training), paths["weights"], paths["losses"], paths["plot"],
        paths["checkpoint"], seed=seed, use_gpu=False, threads=1,
    )
    return paths


def _state(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]


def _assert_same_weights(a: Path, b: Path) -> None:
    sa, sb = _state(a), _state(b)
    assert sa.keys() == sb.keys()
    for k in sa:
        assert torch.equal(sa[k], sb[k]), k


def test_defaults_are_the_paper_settings() -> None:
    cfg = section("training")
    assert (cfg["epochs"], cfg["batch_size"], cfg["learning_rate"]) == (250, 256, 1e-3)
    assert cfg["adam_betas"] == [0.9, 0.999] and cfg["width_factor"] == 1.0
    assert cfg["contrastive"]["weight"] == 20.0
    assert cfg["kl_hold_epochs"] == cfg["kl_warmup_epochs"] == 0.0
    for bad, key in (({"epoch": 3}, "training.epoch"),
                     ({"contrastive": {"wieght": 3}}, "training.contrastive.wieght"),
                     ({"width_factor": 0}, "training.width_factor"),
                     ({"init": "xavier"}, "training.init"),
                     ({"base_channels": 0}, "training.base_channels"),
                     ({"contrastive": {"gamma_range": [1.5, 0.7]}}, "training.contrastive.gamma_range")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            section("training", bad)
    assert cfg["init"] == "glorot" and cfg["base_channels"] is None


def test_stabilisers_are_on_by_default_and_named_in_the_schema() -> None:
    cfg = section("training")
    assert cfg["lr_warmup_steps"] == 2000 and cfg["grad_clip_norm"] == 1000.0
    for bad, key in (({"lr_warmup_steps": -1}, "training.lr_warmup_steps"),
                     ({"grad_clip_norm": 0}, "training.grad_clip_norm")):
        with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
            section("training", bad)


def test_learning_rate_warmup() -> None:
    assert [tr.learning_rate(s, 1e-3, 0) for s in (0, 7)] == [1e-3, 1e-3]
    assert [tr.learning_rate(s, 1e-3, 4) for s in (0, 1, 3, 4, 100)] == pytest.approx(
        [2.5e-4, 5e-4, 1e-3, 1e-3, 1e-3])


def test_gradients_clipped_to_the_norm() -> None:
    model = torch.nn.Linear(3, 2)
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    before = tr.clip_gradients(model, 1.0)
    assert float(before) == pytest.approx(10.0 * math.sqrt(8))
    after = torch.sqrt(sum((p.grad ** 2).sum() for p in model.parameters()))
    assert float(after) == pytest.approx(1.0, rel=1e-5)
    assert tr.clip_gradients(model, None) is None


def test_warmup_and_clipping_reach_the_optimizer(dataset: Path, tmp_path: Path) -> None:
    """The warm-up sets Adam's rate step by step (a run whose warm-up never ends moves
    the weights less than the plain run), clipping changes the trajectory, and both
    are part of the checkpoint fingerprint (another value starts afresh)."""
    plain = _run(dataset, tmp_path / "plain", epochs=1)
    slow = _run(dataset, tmp_path / "slow", epochs=1, lr_warmup_steps=1000)
    clipped = _run(dataset, tmp_path / "clip", epochs=1, grad_clip_norm=1e-3)
    torch.manual_seed(tr._seeds(0, 4)[0])  # the runs' initialisation (seed 0)
    init = build_from_training(VAE, SHAPE, _training()).state_dict()

    def moved(path: Path) -> float:
        state = _state(path)
        return sum(float((state[k] - init[k]).abs().sum()) for k in init)

    # 5 steps at <= 5 / 1000 of the rate move the weights far less than 5 at the rate
    assert moved(slow["weights"]) < 0.05 * moved(plain["weights"])
    assert moved(clipped["weights"]) != pytest.approx(moved(plain["weights"]))


def test_kl_schedule() -> None:
    assert [tr.kl_weight(s, 0, 0) for s in (0, 5)] == [1.0, 1.0]
    assert [tr.kl_weight(s, 2, 4) for s in (0, 1, 2, 3, 5, 9)] == [0.0, 0.0, 0.25, 0.5, 1.0, 1.0]


def test_outputs_csv_plot_and_loss_falls(dataset: Path, tmp_path: Path) -> None:
    paths = _run(dataset, tmp_path, epochs=6, init="he")
    for key in ("weights", "losses", "plot", "checkpoint"):
        assert paths[key].stat().st_size > 0
    frame = pd.read_csv(paths["losses"])
    assert tuple(frame.columns) == tr.CSV_COLUMNS
    it = frame[frame["level"] == "iteration"]
    assert len(it) == 6 * math.ceil(80 / 16) and it["iteration"].tolist() == list(range(1, len(it) + 1))
    ep = frame[frame["level"] == "epoch"]
    assert sorted(ep["split"].unique()) == ["train", "val"] and len(ep) == 12
    assert np.isfinite(frame[list(tr.METRICS)].to_numpy()).all()
    train_ep = ep[ep["split"] == "train"]["l2"].to_numpy()
    assert train_ep[-1] < 0.95 * train_ep[0]
    assert it["l2"].iloc[-5:].mean() < it["l2"].iloc[:5].mean()


def test_training_loss_ignores_pixels_off_the_mask(dataset: Path) -> None:
    _, _, mask_np = read_sample(dataset)
    mask = torch.from_numpy(mask_np)
    x = torch.rand(6, *SHAPE) * 2 - 1
    x2 = x.clone()
    x2[:, ~mask] = torch.rand(int((~mask).sum())) * 50
    ccfg = section("training")["contrastive"]
    for variant in (VAE, CONTRASTIVE):
        torch.manual_seed(0)
        model = build_model(variant, SHAPE, 0.25, projection_dim=8)
        runner = tr._Runner(model, torch.device("cpu"), section("training"))
        a = tr._batch_losses(runner, x, mask, variant, 1.0, ccfg, torch.Generator().manual_seed(5))
        b = tr._batch_losses(runner, x2, mask, variant, 1.0, ccfg, torch.Generator().manual_seed(5))
        for key in tr.METRICS:
            assert torch.equal(a[key], b[key]), (variant["loss"], key)


def test_same_seed_same_weights_other_seed_differs(dataset: Path, tmp_path: Path) -> None:
    a = _run(dataset, tmp_path / "a", seed=7)
    b = _run(dataset, tmp_path / "b", seed=7)
    c = _run(dataset, tmp_path / "c", seed=8)
    _assert_same_weights(a["weights"], b["weights"])
    assert pd.read_csv(a["losses"]).equals(pd.read_csv(b["losses"]))
    sa, sc = _state(a["weights"]), _state(c["weights"])
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)


class _Killed(BaseException):
    """Stands in for SIGKILL: not an Exception, so nothing on the way can swallow it."""


@pytest.mark.parametrize("kill", ["after_checkpoint", "mid_epoch"])
def test_resume_after_kill_equals_uninterrupted(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, kill: str
) -> None:
    # Contrastive with a KL hold and ramp: every RNG stream and the schedule cross the kill.
    extra = {"epochs": 4, "kl_hold_epochs": 1, "kl_warmup_epochs": 2}
    ref = _run(dataset, tmp_path / "ref", CONTRASTIVE, **extra)

    if kill == "after_checkpoint":
        real_save = tr._save_checkpoint
        calls = []

        def save_then_die(path: Path, state: dict[str, Any]) -> None:
            real_save(path, state)
            calls.append(1)
            if len(calls) == 2:
                raise _Killed

        monkeypatch.setattr(tr, "_save_checkpoint", save_then_die)
    else:
        real_losses = tr._batch_losses
        calls = []

        def die_in_epoch_3(*args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
            calls.append(1)
            # Per epoch: 5 steps + 3 val + 3 val_clean batches; die at step 3 of epoch 3.
            if len(calls) == 2 * (5 + 3 + 3) + 3:
                raise _Killed
            return real_losses(*args, **kwargs)

        monkeypatch.setattr(tr, "_batch_losses", die_in_epoch_3)
    out = tmp_path / "killed"
    with pytest.raises(_Killed):
        _run(dataset, out, CONTRASTIVE, **extra)
    assert not (out / "weights.pt").exists()
    assert (out / "checkpoint.pt").exists()
    monkeypatch.undo()

    resumed = _run(dataset, out, CONTRASTIVE, **extra)
    _assert_same_weights(ref["weights"], resumed["weights"])
    assert pd.read_csv(ref["losses"]).equals(pd.read_csv(resumed["losses"]))


def test_extending_epochs_resumes_and_matches_a_longer_run(dataset: Path, tmp_path: Path) -> None:
    long = _run(dataset, tmp_path / "long", epochs=4)
    _run(dataset, tmp_path / "ext", epochs=2)
    ext = _run(dataset, tmp_path / "ext", epochs=4)
    _assert_same_weights(long["weights"], ext["weights"])


def test_checkpoint_of_other_settings_is_not_resumed(dataset: Path, tmp_path: Path) -> None:
    _run(dataset, tmp_path / "x", seed=1, epochs=2)
    fresh = _run(dataset, tmp_path / "fresh", seed=2, epochs=2)
    reused = _run(dataset, tmp_path / "x", seed=2, epochs=2)  # seed-1 checkpoint there
    _assert_same_weights(fresh["weights"], reused["weights"])


def test_keep_checkpoint_false_removes_it(dataset: Path, tmp_path: Path) -> None:
    paths = _run(dataset, tmp_path, epochs=1, keep_checkpoint=False)
    assert paths["weights"].exists() and not paths["checkpoint"].exists()


def test_cpu_path_when_cuda_is_missing(dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    paths = tmp_path / "w.pt", tmp_path / "l.csv", tmp_path / "p.png", tmp_path / "c.pt"
    tr.train_variant(dataset, VAE, _training(epochs=1), *paths, seed=0, use_gpu=True, threads=2)
    _, _, meta = load_model(paths[0])
    assert meta["device"] == "cpu"


def test_load_model_rebuilds_the_trained_network(dataset: Path, tmp_path: Path) -> None:
    paths = _run(dataset, tmp_path, CONTRASTIVE, epochs=1)
    enc, dec, meta = load_model(paths["weights"])
    assert meta["variant"] == CONTRASTIVE and meta["pattern_shape"] == list(SHAPE)
    assert meta["width_factor"] == 0.25 and meta["training"]["init"] == "glorot"
    assert meta["epochs_trained"] == 1 and set(meta["final"]) >= {"val_l2", "val_kl", "val_clean_l2"}
    state = _state(paths["weights"])
    for k, v in enc.state_dict().items():
        assert torch.equal(v, state[f"encoder.{k}"])
    assert not enc.training and not dec.training
    with torch.no_grad():
        mean, _ = enc(torch.zeros(2, *SHAPE))
        assert dec(mean).shape == (2, 1, *SHAPE)
    frame = pd.read_csv(paths["losses"])
    assert set(frame[frame["level"] == "epoch"]["split"]) == {"train", "val", "val_clean"}
    assert (frame[frame["level"] == "iteration"]["contrastive"] > 0).all()


def test_demo_settings_base_channels_and_he_init_train(dataset: Path, tmp_path: Path) -> None:
    paths = _run(dataset, tmp_path, epochs=1, base_channels=2, init="he", learning_rate=2e-3,
                 kl_hold_epochs=0.5, kl_warmup_epochs=0.5)
    enc, _, meta = load_model(paths["weights"])
    assert meta["width_factor"] == 2.0  # 4 * base_channels / d
    assert enc.features[0].out_channels == 2


def test_plot_loss_comparison(dataset: Path, tmp_path: Path) -> None:
    a = _run(dataset, tmp_path / "a", epochs=2)
    b = _run(dataset, tmp_path / "b", {"loss": "beta_vae", "latent_dim": 4, "beta": 15}, epochs=2)
    out = tmp_path / "all.png"
    tr.plot_loss_comparison({"vae4": a["losses"], "betavae15": b["losses"]}, out, window=3)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- the GPU paths, as far as the CPU can show them (issue: GPU path defects) ------------
def test_a_checkpoint_of_another_device_is_not_resumed(dataset: Path, tmp_path: Path) -> None:
    fresh = _run(dataset, tmp_path / "fresh", epochs=2)
    _run(dataset, tmp_path / "x", epochs=1)
    state = torch.load(tmp_path / "x" / "checkpoint.pt", weights_only=True)
    assert state["fingerprint"]["device"] == "cpu" and state["fingerprint"]["bf16"] is False
    state["fingerprint"]["device"] = "cuda"  # what a GPU run would have written
    torch.save(state, tmp_path / "x" / "checkpoint.pt")
    again = _run(dataset, tmp_path / "x", epochs=2)
    _assert_same_weights(fresh["weights"], again["weights"])


def test_a_checkpoint_that_cannot_be_restored_never_stops_the_run(
    dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A CUDA generator state (16 bytes) where the CPU one (5,056) belongs, under a
    matching fingerprint: the restore fails after the model was loaded; the run starts
    afresh from a clean model and ends as a fresh run does."""
    fresh = _run(dataset, tmp_path / "fresh", epochs=2)
    _run(dataset, tmp_path / "x", epochs=1)
    state = torch.load(tmp_path / "x" / "checkpoint.pt", weights_only=True)
    state["rng_noise"] = torch.zeros(16, dtype=torch.uint8)
    torch.save(state, tmp_path / "x" / "checkpoint.pt")
    with caplog.at_level("WARNING", logger="latentebsd.train"):
        again = _run(dataset, tmp_path / "x", epochs=2)
    assert "could not be restored" in caplog.text
    _assert_same_weights(fresh["weights"], again["weights"])


def test_deterministic_switch_changes_nothing_on_the_cpu_but_the_fingerprint(
    dataset: Path, tmp_path: Path
) -> None:
    a = _run(dataset, tmp_path / "a", epochs=1)
    b = _run(dataset, tmp_path / "b", epochs=1, deterministic=True)
    _assert_same_weights(a["weights"], b["weights"])
    fa = torch.load(a["checkpoint"], weights_only=True)["fingerprint"]
    fb = torch.load(b["checkpoint"], weights_only=True)["fingerprint"]
    assert fa != fb and fb["training"]["deterministic"] is True


def test_bf16_only_on_gpus_with_native_bf16(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    cfg = section("training")
    cuda = torch.device("cuda")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    with caplog.at_level("WARNING", logger="latentebsd.train"):
        assert tr.use_bf16(cuda, cfg) is False  # emulated only: float32
    assert "no native bf16" in caplog.text
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: True)
    assert tr.use_bf16(cuda, cfg) is True
    assert tr.use_bf16(cuda, {**cfg, "bf16": False}) is False
    assert tr.use_bf16(torch.device("cpu"), cfg) is False


def test_compile_only_where_it_pays_back() -> None:
    paper = section("training")  # 250 epochs x 300 steps of 256
    assert paper["compile"] == "auto" and tr.compile_wanted(paper, 76_800)
    demo = section("training", {"epochs": 8, "batch_size": 16})  # 2,400 steps
    assert not tr.compile_wanted(demo, 4_800)
    assert tr.compile_wanted({**demo, "compile": True}, 4_800)
    assert not tr.compile_wanted({**paper, "compile": False}, 76_800)
    with pytest.raises(ConfigError, match=r"training\.compile"):
        section("training", {"compile": "yes"})


def test_compile_shapes_cover_every_batch_a_run_uses() -> None:
    cfg = section("training", {"batch_size": 16, "eval_batch_size": 10})
    assert tr.compile_shapes(80, 24, cfg, False) == [(16, True), (4, False), (10, False)]
    assert tr.compile_shapes(70, 24, cfg, True) == [(12, True), (32, True), (8, False), (20, False),
                                                    (4, False), (10, False)]
    assert tr.compile_shapes(8, 0, cfg, False) == [(8, True)]


@pytest.mark.parametrize("variant", [VAE, CONTRASTIVE])
def test_a_compiled_run_never_recompiles(dataset: Path, tmp_path: Path, variant: dict) -> None:
    """Warm-up at the shapes of compile_shapes: one epoch (partial last batch, validation
    under no_grad, the contrastive views) runs without a single recompilation
    (torch.compile with the eager backend, which guards and recompiles like inductor)."""
    import torch._dynamo

    cfg = _training(batch_size=16, eval_batch_size=10)  # 80 train (5 full batches), 24 val (10, 10, 4)
    s = tr._setup(dataset, variant, {**cfg, "batch_size": 12}, tmp_path / "c.pt", 0, False, 1)
    s.runner = tr._Runner(s.model, s.device, s.cfg)
    torch._dynamo.reset()
    shapes = tr.compile_shapes(len(s.train), len(s.val), s.cfg, variant["loss"] == "contrastive")
    assert s.runner.try_compile(s.mask, shapes, backend="eager")
    old = torch._dynamo.config.error_on_recompile
    torch._dynamo.config.error_on_recompile = True
    try:
        tr._run_epoch(s, 0)  # 80 = 6 x 12 + 8: a partial last batch
    finally:
        torch._dynamo.config.error_on_recompile = old
        torch._dynamo.reset()
    assert s.runner.encode.compiled is not None and s.runner.decode.compiled is not None


def test_out_of_gpu_memory_names_the_settings_to_lower(dataset: Path, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    def oom(*args: Any, **kwargs: Any) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(tr, "_run_epoch", oom)
    with pytest.raises(MemoryError, match=r"training\.batch_size \(now 16\).*data_on_device: false"):
        _run(dataset, tmp_path)


def test_batches_from_host_memory_equal_device_resident_ones(dataset: Path, tmp_path: Path) -> None:
    s = tr._setup(dataset, VAE, _training(), tmp_path / "c.pt", 0, False, 1)
    assert s.staging is None  # the CPU: data are where the model is
    idx = torch.tensor([5, 3, 70, 0])
    direct = s.batch(idx)
    s.staging = torch.empty((16, *SHAPE))  # what data_on_device: false stages through on CUDA
    np.testing.assert_array_equal(s.batch(idx).numpy(), direct.numpy())


def test_a_resumed_run_trains_only_the_remaining_epochs(
    dataset: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Resuming skips the epochs the checkpoint holds: a 2-epoch run extended to 4 takes
    2 epochs' optimizer steps (80 patterns / 16 = 5 per epoch), not 4. Equal weights alone
    do not show it: a deterministic restart from scratch ends with the same weights."""
    _run(dataset, tmp_path, epochs=2)
    steps: list[int] = []
    epochs: list[int] = []
    real_step, real_epoch = tr._train_step, tr._run_epoch

    def counted_step(*args: Any, **kwargs: Any) -> torch.Tensor:
        steps.append(1)
        return real_step(*args, **kwargs)

    def counted_epoch(s: Any, epoch: int) -> None:
        epochs.append(epoch)
        real_epoch(s, epoch)

    monkeypatch.setattr(tr, "_train_step", counted_step)
    monkeypatch.setattr(tr, "_run_epoch", counted_epoch)
    paths = _run(dataset, tmp_path, epochs=4)
    assert epochs == [2, 3] and len(steps) == 2 * 5
    # the loss history is still the whole run's: 4 epochs of 5 iterations
    frame = pd.read_csv(paths["losses"])
    assert len(frame[frame["level"] == "iteration"]) == 4 * 5
    assert sorted(set(frame[frame["level"] == "epoch"]["epoch"])) == [1, 2, 3, 4]
