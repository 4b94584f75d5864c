"""Synthetic EBSD scans with known ground truth, for testing the whole workflow.

Patterns are projected from kikuchipy's shipped 20 kV nickel master pattern (FCC, as
the Ni-based Inconel 718 of the paper; nothing is downloaded) with
:meth:`kikuchipy.signals.EBSDMasterPattern.get_patterns`, or - for the other materials a
scan may be made of (``materials``: ferrite, austenite, titanium; one phase or several,
:data:`latentebsd.phases.SIMULATED_MATERIALS`) - from a 20 kV kinematical master pattern
that kikuchipy's ``KikuchiPatternSimulator`` computes from the crystal structure
(:func:`kinematical_master_pattern`), one detector PC per pattern
(the PC drifts across the map as on a real SEM), then dressed up as raw, not
background-corrected detector images: a smooth non-uniform background, the circular
phosphor screen, Poisson shot noise and camera read noise, and one fixed gain
(counts -> 16-bit grey levels) for the whole scan.

Detector imperfections (``imperfections``, issue 25): a real scan's Hough orientations
scatter by a few tenths of a degree between neighbours of one grain, an ideal
simulation's by a few hundredths. The simulator renders each pattern with a true PC
and camera tilt that differ from the nominal ones the workflow indexes with (per-point
PC jitter, a PC offset, a smooth PC drift error, a tilt error), may distort the
patterns radially and softens every band (``band_blur``); ``benchmarks/calibration.py``
calibrates the defaults against kikuchipy's real Ni map, the ground truth records the
PC each pattern was rendered with.

Three microstructures are drawn on the scan grid (see :func:`simulate_scan`):

``wrought``
    Equiaxed Voronoi grains, annealing twin lamellae (Sigma3: 60 deg about the
    <111> normal of the twin plane, bounded by straight traces of that {111} plane),
    some of them only 1-2 scan points thick, and polishing scratches.
``am``
    Columnar grains elongated along one map axis with smooth orientation gradients,
    rotation domains (sub-grains misoriented by a few tenths of a degree to ~2 deg),
    a dislocation-cell network whose walls blur the Kikuchi bands and rotate the
    lattice slightly, and small particles on some cell walls whose pattern (a second
    orientation) overlaps the matrix pattern.
``polycrystal``
    Many small equiaxed grains of random orientation (a ``wrought`` map with its own
    grain size, by default no twins): orientation diversity for the training sample,
    as the paper's training-only Waspaloy map.

Graded strength (:func:`grading_levels`): a scan may carry its heterogeneity at
``levels`` strengths in bands across the map, from ``weakest`` x to 1 x the configured
values (geometric steps), so that detection limits can be measured on one scan. The
graded quantities are the lattice rotations of cells and walls, the dislocation density
at walls (hence the band blur), the particle pattern weight, the rotation-domain
misorientation and the scratch damage (rotation, density, blur, contrast loss); grains,
orientation gradients and twins are not graded. :data:`GRADED` names the physical
parameter of each class; the ground truth records the level and strength per point.

Phases: with several materials, every grain (twins and particles with it) is of one
of them, drawn with ``fractions`` from a generator of its own (seeded by the scan's
seed), so a one-material scan's patterns do not change; the ground truth records the
phase of every point (``phase_id``, an index into ``materials``). Annealing twins are
Sigma3 (FCC) lamellae: give a BCC or HCP scan ``twin_fraction: 0``, or its "twins" are
lamellae 60 deg about a <111>-like crystal axis.

Orientation convention: quaternions are orix's (an :class:`orix.quaternion.Orientation`
maps sample-frame vectors into the crystal frame), exactly the rotations passed to
kikuchipy. PyEBSDIndex (vendor ``EDAX``/``KIKUCHIPY``) returns the same convention,
checked in ``tests/test_simulate.py``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import kikuchipy as kp
import numpy as np
from kikuchipy.detectors import EBSDDetector
from orix.quaternion import Rotation
from orix.vector import Vector3d
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from tqdm.auto import tqdm

from latentebsd import config
from latentebsd.geometry import ScanGeometry
from latentebsd.io.patterns import write_up2
from latentebsd.io.truth import write_truth
from latentebsd.phases import SIMULATED_MATERIALS, PhaseSpec, orix_phase, structure_factors

MICROSTRUCTURES = ("wrought", "am", "polycrystal")
#: The default material of a simulated scan (the embedded default's).
DEFAULT_MATERIALS = ("nickel",)
#: Salt of the generator that draws the phase of each grain (several materials).
PHASE_SALT = 7_070_707
#: Salt of the generator that draws the detector imperfections (PC jitter, drift-error
#: direction): its own stream, so that imperfections never move the microstructure or
#: the pixel noise, and zero imperfections give today's patterns byte for byte.
IMPERFECTION_SALT = 25_252_525
#: Kinematical master patterns: smallest d-spacing of the reflectors (Angstrom), the
#: weakest reflector kept (fraction of the largest |F|), stereographic half size.
KINEMATICAL_MIN_DSPACING = 0.7
KINEMATICAL_MIN_F = 0.05
KINEMATICAL_HALF_SIZE = 250

#: Graded class -> (settings block, key, index into a [low, high] pair or None, label):
#: the physical parameter a class's strength is reported in (its value at strength 1).
GRADED: dict[str, tuple[str, str, int | None, str]] = {
    "dislocation_cells": ("am", "wall_rotation_deg", None, "max lattice rotation on cell walls (deg)"),
    "dislocation_density": ("am", "wall_density", 1, "max dislocation density at walls (a.u.)"),
    "particles": ("am", "particle_weight", 1, "max particle pattern weight"),
    "rotation_domains": ("am", "domain_misorientation_deg", 1, "max rotation-domain misorientation (deg)"),
    "scratch": ("", "scratch_rotation_deg", None, "max lattice rotation in scratches (deg)"),
}


# --------------------------------------------------------------------------------------
# Microstructure ground truth
# --------------------------------------------------------------------------------------
@dataclass
class Truth:
    """Per-point ground truth of one simulated map; every array is ``(n_rows, n_cols)``.

    Attributes
    ----------
    grain_id
        Parent grain (twins keep their parent's id).
    quaternion
        ``(n_rows, n_cols, 4)`` orientation simulated at each point (orix convention).
    twin_mask
        Point lies in an annealing twin lamella.
    dislocation_density
        Arbitrary units: cell walls (and scratches), 0 in cell interiors.
    cell_wall_mask, particle_mask, scratch_mask
        Point lies on a dislocation-cell wall / on a particle / in a scratch.
    domain_id
        Region of one base orientation: a twin lamella or the rest of a grain
        (``wrought``), a rotation domain / sub-grain of a grain (``am``).
    grain_boundary_mask
        Point has a 4-neighbour in another grain or across a twin boundary.
    particle_quaternion, particle_weight
        Orientation and mixing weight of the overlapping particle pattern (weight 0
        where there is no particle).
    pattern_blur_px
        Gaussian sigma (pixels of the simulated pattern) applied to the Kikuchi signal.
    contrast_factor
        Multiplier on ``kikuchi_contrast`` (below 1 in scratches).
    strength_level, strength
        Graded-strength band of the point (0 = weakest) and its strength factor
        (1 where the scan is not graded).
    phase_id
        Phase of the point: an index into the scan's ``materials`` (0 for one).
    pc_used
        ``(n_rows, n_cols, 3)`` Bruker PC each pattern was rendered with: the nominal PC
        of the scan geometry (what the indexer is told) plus ``pc_error``.
    pc_error
        ``(n_rows, n_cols, 3)`` the simulator's PC error at each point
        (:func:`pc_errors`: offset + smooth drift error + per-point jitter; zeros
        without imperfections).
    """

    grain_id: np.ndarray
    quaternion: np.ndarray
    twin_mask: np.ndarray
    dislocation_density: np.ndarray
    cell_wall_mask: np.ndarray
    particle_mask: np.ndarray
    scratch_mask: np.ndarray
    domain_id: np.ndarray
    grain_boundary_mask: np.ndarray
    particle_quaternion: np.ndarray
    particle_weight: np.ndarray
    pattern_blur_px: np.ndarray
    contrast_factor: np.ndarray
    strength_level: np.ndarray
    strength: np.ndarray
    phase_id: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0), np.int8))
    pc_used: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 3)))
    pc_error: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros((0, 0, 3)))

    @classmethod
    def empty(cls, shape: tuple[int, int]) -> "Truth":
        qid = np.zeros((*shape, 4))
        qid[..., 0] = 1.0
        return cls(
            grain_id=np.zeros(shape, np.int32), quaternion=qid.copy(),
            twin_mask=np.zeros(shape, bool), dislocation_density=np.zeros(shape, np.float32),
            cell_wall_mask=np.zeros(shape, bool), particle_mask=np.zeros(shape, bool),
            scratch_mask=np.zeros(shape, bool), domain_id=np.zeros(shape, np.int32),
            grain_boundary_mask=np.zeros(shape, bool), particle_quaternion=qid.copy(),
            particle_weight=np.zeros(shape, np.float32),
            pattern_blur_px=np.zeros(shape, np.float32),
            contrast_factor=np.ones(shape, np.float32),
            strength_level=np.zeros(shape, np.int16), strength=np.ones(shape, np.float32),
            phase_id=np.zeros(shape, np.int8),
        )


def random_quaternions(rng: np.random.Generator, n: int) -> np.ndarray:
    """``n`` unit quaternions uniform on SO(3) (normalised 4D Gaussians), ``a >= 0``."""
    q = rng.normal(size=(n, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    q[q[:, 0] < 0] *= -1
    return q


def small_rotations(rng: np.random.Generator, angles_deg: np.ndarray) -> np.ndarray:
    """Quaternions of the given angles about uniformly random axes, shape ``(n, 4)``."""
    angles_deg = np.atleast_1d(np.asarray(angles_deg, dtype=np.float64))
    axes = rng.normal(size=(angles_deg.size, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    return Rotation.from_axes_angles(axes, angles_deg, degrees=True).data.reshape(-1, 4)


def _compose(q: np.ndarray, r: np.ndarray) -> np.ndarray:
    """``q * r`` elementwise with orix: ``r`` is a rotation in the *sample* frame.

    An orix orientation maps sample to crystal, so a lattice rotation described in the
    sample frame (bending, sub-grain tilt) multiplies on the right.
    """
    out = (Rotation(q.reshape(-1, 4)) * Rotation(r.reshape(-1, 4))).data
    return out.reshape(q.shape)


def _grid(shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.indices(shape, dtype=np.float64)
    return rows, cols


def _voronoi(shape: tuple[int, int], seeds: np.ndarray, scale: tuple[float, float] = (1.0, 1.0),
             k: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Nearest-seed labels (and distances) of every grid point; ``scale`` stretches axes."""
    rows, cols = _grid(shape)
    pts = np.column_stack([rows.ravel() * scale[0], cols.ravel() * scale[1]])
    tree = cKDTree(seeds * np.asarray(scale))
    dist, idx = tree.query(pts, k=k)
    if k == 1:
        return idx.reshape(shape), dist.reshape(shape)
    return idx.reshape(*shape, k), dist.reshape(*shape, k)


def _relabel(labels: np.ndarray) -> np.ndarray:
    """Consecutive ids ``0..n-1`` in sorted label order (seeds that own no point vanish)."""
    _, inverse = np.unique(labels, return_inverse=True)
    return inverse.reshape(labels.shape).astype(np.int32)


def _boundary_mask(labels: np.ndarray) -> np.ndarray:
    """Points with a 4-neighbour of a different label."""
    mask = np.zeros(labels.shape, bool)
    dv = labels[1:, :] != labels[:-1, :]
    dh = labels[:, 1:] != labels[:, :-1]
    mask[1:, :] |= dv
    mask[:-1, :] |= dv
    mask[:, 1:] |= dh
    mask[:, :-1] |= dh
    return mask


def _n_seeds(shape: tuple[int, int], area_per_seed: float) -> int:
    return max(2, int(round(shape[0] * shape[1] / area_per_seed)))


def _uniform_seeds(rng: np.random.Generator, shape: tuple[int, int], n: int) -> np.ndarray:
    return rng.uniform([-0.5, -0.5], [shape[0] - 0.5, shape[1] - 0.5], size=(n, 2))


def grading_levels(grading: Mapping[str, Any] | None) -> np.ndarray:
    """Strength factor of every level: ``weakest`` to 1 in geometric steps (``[1]`` if
    the scan is not graded)."""
    if not grading or int(grading["levels"]) <= 1:
        return np.ones(1)
    n, weakest = int(grading["levels"]), float(grading["weakest"])
    return weakest ** (1.0 - np.arange(n) / (n - 1))


def _grade(truth: Truth, grading: Mapping[str, Any] | None) -> np.ndarray:
    """Fill ``strength_level`` / ``strength`` (bands across the map) and return the
    level factors."""
    factors = grading_levels(grading)
    shape = truth.grain_id.shape
    if len(factors) > 1:
        axis = 1 if grading["axis"] == "columns" else 0
        coord = np.indices(shape)[axis]
        level = (coord * len(factors)) // shape[axis]
        truth.strength_level = level.astype(np.int16)
        truth.strength = factors[level].astype(np.float32)
    return factors


def _strength_at(truth: Truth, points: np.ndarray) -> np.ndarray:
    """Strength of the band holding each (row, col) point (rounded, clipped to the map)."""
    shape = truth.grain_id.shape
    r = np.clip(np.rint(points[:, 0]).astype(int), 0, shape[0] - 1)
    c = np.clip(np.rint(points[:, 1]).astype(int), 0, shape[1] - 1)
    return truth.strength[r, c].astype(np.float64)


def graded_parameters(microstructure: str, settings: Mapping[str, Any],
                      grading: Mapping[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Class -> ``{"parameter", "values"}``: the physical value of each graded class
    of the scan at every level (what detection limits are reported in)."""
    factors = grading_levels(grading)
    own = {**settings["wrought"], **settings["polycrystal"]} if microstructure == "polycrystal" \
        else settings[microstructure]
    out = {}
    for cls, (block, key, index, label) in GRADED.items():
        if (block and block != microstructure) or (not block and own["n_scratches"] == 0):
            continue
        value = (settings[block] if block else settings)[key]
        top = float(value if index is None else value[index])
        out[cls] = {"parameter": label, "values": [round(float(top * f), 6) for f in factors]}
    return out


def _add_scratches(truth: Truth, n_scratches: int, cfg: dict[str, Any],
                   rng: np.random.Generator) -> None:
    """Straight polishing scratches: blurred, low-contrast, slightly rotated patterns.

    The scratch keeps the underlying orientation plus a random rotation of up to
    ``scratch_rotation_deg`` per point (plastic damage of the surface layer); rotation,
    density, blur and contrast loss scale with the point's graded strength.
    """
    shape = truth.grain_id.shape
    rows, cols = _grid(shape)
    width = cfg["pattern_shape"][1]
    for _ in range(n_scratches):
        r0, c0 = rng.uniform([0, 0], [shape[0] - 1, shape[1] - 1])
        phi = rng.uniform(0, np.pi)
        dist = np.abs((rows - r0) * np.cos(phi) - (cols - c0) * np.sin(phi))
        mask = (dist < cfg["scratch_width"] / 2) & ~truth.scratch_mask
        n = int(mask.sum())
        if n == 0:
            continue
        m = truth.strength[mask].astype(np.float64)
        rot = small_rotations(rng, rng.uniform(0, cfg["scratch_rotation_deg"], n) * m)
        truth.quaternion[mask] = _compose(truth.quaternion[mask], rot)
        truth.scratch_mask |= mask
        truth.pattern_blur_px[mask] = np.maximum(truth.pattern_blur_px[mask],
                                                 cfg["scratch_blur"] * width * m)
        truth.contrast_factor[mask] *= 1.0 - (1.0 - cfg["scratch_contrast"]) * m
        truth.dislocation_density[mask] += cfg["scratch_density"] * m


def _wrought(shape: tuple[int, int], cfg: dict[str, Any], p: Mapping[str, Any],
             rng: np.random.Generator, grading: Mapping[str, Any] | None) -> Truth:
    """Equiaxed grains with annealing twin lamellae and polishing scratches (``p``: the
    ``wrought`` block, or ``polycrystal``'s overrides of it)."""
    truth = Truth.empty(shape)
    _grade(truth, grading)
    seeds = _uniform_seeds(rng, shape, _n_seeds(shape, p["grain_size"] ** 2))
    grain, _ = _voronoi(shape, seeds)
    grain = _relabel(grain)
    n_grains = int(grain.max()) + 1
    q_grain = random_quaternions(rng, n_grains)
    truth.grain_id = grain
    truth.quaternion = q_grain[grain]
    domain = grain.astype(np.int64).copy()
    next_domain = n_grains

    rows, cols = _grid(shape)
    planes = np.array([[1, 1, 1], [-1, 1, 1], [1, -1, 1], [1, 1, -1]], float) / np.sqrt(3)
    lamellae: list[tuple[int, int]] = []  # (grain, n lamellae)
    for g in range(n_grains):
        if rng.random() < p["twin_fraction"]:
            lamellae.append((g, int(rng.integers(p["twins_per_grain"][0],
                                                  p["twins_per_grain"][1] + 1))))
    n_lamellae = sum(n for _, n in lamellae)
    thin = rng.random(n_lamellae) < p["thin_twin_fraction"]
    if p["thin_twin_fraction"] > 0 and n_lamellae and not thin.any():
        thin[0] = True  # a thin twin is the point of the wrought demo: always have one
    k = 0
    for g, n in lamellae:
        in_grain = grain == g
        pts = np.argwhere(in_grain)
        # The {111} twin planes seen from the sample frame (orix: ~O maps crystal -> sample)
        normals = (~Rotation(q_grain[g])) * Vector3d(planes)
        normals = normals.data.reshape(-1, 3)
        for _ in range(n):
            in_plane = np.linalg.norm(normals[:, :2], axis=1)
            # A plane nearly parallel to the surface has no clean trace: prefer steep ones
            candidates = np.flatnonzero(in_plane > 0.5)
            v = int(rng.choice(candidates)) if candidates.size else int(np.argmax(in_plane))
            # orix/TSL sample x runs along map columns, y along map rows
            nx, ny = normals[v, :2] / in_plane[v]
            lo, hi = (1.0, 2.0) if thin[k] else p["twin_thickness"]
            thickness = rng.uniform(lo, hi)
            r0, c0 = pts[rng.integers(len(pts))]
            dist = np.abs((cols - c0) * nx + (rows - r0) * ny)
            mask = in_grain & (dist < thickness / 2) & ~truth.twin_mask
            k += 1
            if not mask.any():
                continue
            twin_op = Rotation.from_axes_angles(planes[v], 60.0, degrees=True)
            # Sigma3 twin: 60 deg about the twin-plane normal, in the crystal frame (left)
            q_twin = (twin_op * Rotation(q_grain[g])).data.reshape(4)
            truth.quaternion[mask] = q_twin
            truth.twin_mask |= mask
            domain[mask] = next_domain
            next_domain += 1
    truth.domain_id = _relabel(domain)
    truth.grain_boundary_mask = _boundary_mask(grain * 2 + truth.twin_mask)
    _add_scratches(truth, p["n_scratches"], cfg, rng)
    return truth


def _am(shape: tuple[int, int], cfg: dict[str, Any], rng: np.random.Generator,
        grading: Mapping[str, Any] | None) -> Truth:
    """Columnar grains, gradients, rotation domains, dislocation cells, particles.

    Graded: a domain's misorientation takes the strength of its band (band edges cut
    domains), a cell's rotation the strength at its seed, wall rotation, wall density
    and particle weight the strength of their point.
    """
    p = cfg["am"]
    truth = Truth.empty(shape)
    _grade(truth, grading)
    aspect = p["grain_aspect"]
    axis = 0 if p["elongation_axis"] == "vertical" else 1
    # Shrinking the long axis in the metric makes Voronoi cells elongated along it
    scale = (1.0 / aspect, 1.0) if axis == 0 else (1.0, 1.0 / aspect)
    seeds = _uniform_seeds(rng, shape, _n_seeds(shape, p["grain_width"] ** 2 * aspect))
    grain, _ = _voronoi(shape, seeds, scale)
    grain = _relabel(grain)
    n_grains = int(grain.max()) + 1
    truth.grain_id = grain
    q = random_quaternions(rng, n_grains)[grain].reshape(-1, 4)

    # Smooth gradient: rotation angle linear along the grain's long axis, random axis
    coord = np.indices(shape, dtype=np.float64)[axis].ravel()
    g_flat = grain.ravel()
    centre = np.bincount(g_flat, coord) / np.bincount(g_flat)
    rate = rng.uniform(0.0, p["orientation_gradient_deg"], n_grains)
    axes = rng.normal(size=(n_grains, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    grad = Rotation.from_axes_angles(axes[g_flat], rate[g_flat] * (coord - centre[g_flat]),
                                     degrees=True).data.reshape(-1, 4)
    q = _compose(q, grad)

    # Rotation domains: sub-grains cut from each grain by a finer (half as elongated) tiling
    d_scale = (1.0 / np.sqrt(aspect), 1.0) if axis == 0 else (1.0, 1.0 / np.sqrt(aspect))
    d_seeds = _uniform_seeds(rng, shape, _n_seeds(shape, p["domain_size"] ** 2))
    dom, _ = _voronoi(shape, d_seeds, d_scale)
    # A graded band's edge cuts the domains it crosses (into two domains, with a domain
    # boundary there), so that every point of a domain lies in the band whose strength
    # the domain was simulated at and the truth's per-point level is exact for it.
    band = truth.strength_level.astype(np.int64)
    band = band - band.min()
    domain = _relabel((grain.astype(np.int64) * (len(d_seeds) + 1) + dom) * (band.max() + 1) + band)
    n_dom = int(domain.max()) + 1
    lo, hi = p["domain_misorientation_deg"]
    d_flat = domain.ravel()
    d_strength = (np.bincount(d_flat, truth.strength.ravel().astype(np.float64), n_dom)
                  / np.bincount(d_flat, minlength=n_dom))  # one value per domain
    q_dom = small_rotations(rng, rng.uniform(lo, hi, n_dom) * d_strength)
    q = _compose(q, q_dom[domain.ravel()])
    truth.domain_id = domain

    # Dislocation cells: jittered-grid Voronoi; walls where the two nearest seeds are
    # nearly equidistant, so walls are ~cell_wall_width points thick everywhere
    cs = p["cell_size"]
    gr, gc = np.meshgrid(np.arange(-cs / 2, shape[0] + cs, cs),
                         np.arange(-cs / 2, shape[1] + cs, cs), indexing="ij")
    c_seeds = np.column_stack([gr.ravel(), gc.ravel()])
    c_seeds = c_seeds + rng.uniform(-0.35, 0.35, c_seeds.shape) * cs
    idx, dist = _voronoi(shape, c_seeds, k=2)
    cell = idx[..., 0]
    gap = dist[..., 1] - dist[..., 0]
    wall = gap < p["cell_wall_width"]
    n_cells = len(c_seeds)
    q_cell = small_rotations(rng, rng.uniform(0.0, p["cell_misorientation_deg"], n_cells)
                             * _strength_at(truth, c_seeds))
    q = _compose(q, q_cell[cell.ravel()])
    n_wall = int(wall.sum())
    wall_flat = wall.ravel()
    m = truth.strength.ravel().astype(np.float64)
    q[wall_flat] = _compose(q[wall_flat],
                            small_rotations(rng, rng.uniform(0.0, p["wall_rotation_deg"], n_wall)
                                            * m[wall_flat]))
    level = rng.uniform(*p["wall_density"], n_cells)
    # Densest at the wall centre, half that at its edge
    density = level[cell] * (1.0 - 0.5 * gap / p["cell_wall_width"]) * truth.strength
    truth.dislocation_density = np.where(wall, density, 0.0).astype(np.float32)
    truth.cell_wall_mask = wall
    truth.pattern_blur_px = (p["wall_blur"] * cfg["pattern_shape"][1]
                             * truth.dislocation_density).astype(np.float32)
    truth.quaternion = q.reshape(*shape, 4)

    # Particles sit on cell walls; their pattern overlaps the matrix pattern
    particle = wall & (rng.random(shape) < p["particle_fraction"])
    n_part = int(particle.sum())
    truth.particle_mask = particle
    truth.particle_quaternion[particle] = random_quaternions(rng, n_part)
    truth.particle_weight[particle] = (rng.uniform(*p["particle_weight"], n_part)
                                       * truth.strength[particle])

    truth.grain_boundary_mask = _boundary_mask(grain)
    _add_scratches(truth, p["n_scratches"], cfg, rng)
    return truth


def generate_microstructure(microstructure: str, map_shape: tuple[int, int],
                            settings: dict[str, Any], rng: np.random.Generator,
                            grading: Mapping[str, Any] | None = None) -> Truth:
    """Draw the ground-truth microstructure of one map.

    Parameters
    ----------
    microstructure
        ``"wrought"``, ``"am"`` or ``"polycrystal"``.
    map_shape
        ``(n_rows, n_cols)``.
    settings
        Validated ``simulation`` settings (:func:`latentebsd.config.section`).
    rng
        The scan's random generator (consumed).
    grading
        ``{"levels", "weakest", "axis"}`` (``scans.<name>.simulate.grading``); ``None``
        or one level: every point at strength 1.
    """
    micro = _check_microstructure(microstructure)
    shape = _check_map_shape(map_shape)
    if micro == "am":
        return _am(shape, settings, rng, grading)
    block = settings["wrought"] if micro == "wrought" else {**settings["wrought"],
                                                            **settings["polycrystal"]}
    return _wrought(shape, settings, block, rng, grading)


# --------------------------------------------------------------------------------------
# Detector and patterns
# --------------------------------------------------------------------------------------
def scan_geometry(map_shape: tuple[int, int], settings: dict[str, Any]) -> ScanGeometry:
    """The scan geometry, with a PC per pattern drifting as the beam moves.

    ``settings["pc"]`` is the PC at the map centre. The drift follows kikuchipy's
    :meth:`~kikuchipy.detectors.EBSDDetector.extrapolate_pc` (Singh et al. 2017):
    moving the beam along the map's x (columns) shifts PCx, moving along y (rows)
    shifts PCy and PCz by the cosine / sine of ``90 - sample_tilt + camera_tilt``. The
    detector pixel size is chosen so that PCx changes by ``pc_drift`` across the map
    width, whatever the map size.
    """
    n_rows, n_cols = _check_map_shape(map_shape)
    h, w = settings["pattern_shape"]
    step = settings["step_um"]
    pc0 = np.asarray(settings["pc"], dtype=np.float64)
    drift = settings["pc_drift"]
    if drift == 0 or n_rows * n_cols == 1:
        pc = pc0
    else:
        det = EBSDDetector(shape=(h, w), pc=pc0, sample_tilt=settings["sample_tilt"],
                           tilt=settings["camera_tilt"])
        # px_size * binning * ncols = detector width in um: drift = map width / that
        px_size = step * max(n_cols - 1, 1) / (drift * w)
        centre = np.array([(n_rows - 1) // 2, (n_cols - 1) // 2])
        det = det.extrapolate_pc(centre, (n_rows, n_cols), (step, step), shape=(h, w),
                                 px_size=px_size, binning=1)
        pc = det.pc.reshape(-1, 3)
    return ScanGeometry(n_rows, n_cols, step, (h, w), pc, settings["sample_tilt"],
                        settings["camera_tilt"])


@lru_cache(maxsize=1)
def _master_pattern() -> tuple[Any, float, float]:
    """The shipped 20 kV Ni master pattern as float32, with its mean and std.

    float32 in, float32 out keeps get_patterns from rescaling every pattern to its own
    range, so intensities stay comparable between patterns.
    """
    mp = kp.data.nickel_ebsd_master_pattern_small(projection="lambert", hemisphere="upper")
    mp.change_dtype("float32")
    data = np.asarray(mp.data, dtype=np.float64)
    return mp, float(data.mean()), float(data.std())


@lru_cache(maxsize=4)
def kinematical_master_pattern(material: str) -> tuple[Any, float, float]:
    """A 20 kV kinematical master pattern (upper hemisphere, Lambert, float32) of a
    simulated material, with its mean and std.

    kikuchipy's ``KikuchiPatternSimulator`` from the reflectors down to
    :data:`KINEMATICAL_MIN_DSPACING` whose kinematical ``|F|`` is at least
    :data:`KINEMATICAL_MIN_F` of the largest; the structure factors come from
    :func:`latentebsd.phases.structure_factors` (diffsims' own
    ``calculate_structure_factor`` is wrong for hexagonal phases: see
    :mod:`latentebsd.phases`). Computed in memory (seconds; ~40 s of numba compilation
    in a fresh cache), never downloaded.
    """
    from diffsims.crystallography import ReciprocalLatticeVector

    spec = _material(material)
    phase = orix_phase(spec)
    ref = ReciprocalLatticeVector.from_min_dspacing(phase, KINEMATICAL_MIN_DSPACING)
    hkl = np.rint(ref.hkl).astype(int)
    families: dict[tuple[int, ...], float] = {}
    f = np.empty(len(hkl))
    for i, h in enumerate(hkl):
        # one structure factor per plane: symmetry-equivalent planes share |F| anyway,
        # and F of (-h) is F(h)* (no anomalous scattering)
        key = tuple(int(v) for v in h)
        if key not in families:
            families[key] = float(structure_factors(spec, np.array([h]))[0])
        f[i] = families[key]
    keep = f >= KINEMATICAL_MIN_F * f.max()
    ref = ref[keep]
    ref._structure_factor = f[keep].astype(np.complex128)  # see the docstring
    ref.calculate_theta(20e3)
    simulator = kp.simulations.KikuchiPatternSimulator(ref)
    mp = simulator.calculate_master_pattern(half_size=KINEMATICAL_HALF_SIZE, hemisphere="upper")
    mp = mp.as_lambert(show_progressbar=False)
    mp.change_dtype("float32")
    data = np.asarray(mp.data, dtype=np.float64)
    return mp, float(data.mean()), float(data.std())


def _material(name: str) -> PhaseSpec:
    if name not in SIMULATED_MATERIALS:
        raise ValueError(f"materials: {name!r} is not one of {list(SIMULATED_MATERIALS)}")
    return SIMULATED_MATERIALS[name]


def master_pattern(material: str) -> tuple[Any, float, float]:
    """The master pattern a material's patterns are projected from, with its mean and
    std: kikuchipy's dynamical Ni pattern for ``nickel``, else
    :func:`kinematical_master_pattern`."""
    _material(material)
    return _master_pattern() if material == "nickel" else kinematical_master_pattern(material)


def screen_mask(pattern_shape: tuple[int, int], screen_radius: float) -> np.ndarray:
    """Pixels on the circular phosphor screen (radius as a fraction of half the width)."""
    h, w = pattern_shape
    r, c = np.indices((h, w), dtype=np.float64)
    radius = screen_radius * w / 2
    return (r - (h - 1) / 2) ** 2 + (c - (w - 1) / 2) ** 2 <= radius ** 2


def background(pcs: np.ndarray, settings: dict[str, Any]) -> np.ndarray:
    """Smooth raw-detector background, one per PC, mean 1 over the screen.

    A Gaussian hump centred a little below the PC (forward-scattered electrons are
    brighter towards the sample) on a flat floor, times a vertical gradient.
    """
    h, w = settings["pattern_shape"]
    r, c = np.indices((h, w), dtype=np.float32)
    pcs = np.asarray(pcs, dtype=np.float32).reshape(-1, 3)
    cy = (pcs[:, 1] + settings["background_offset"]) * h
    cx = pcs[:, 0] * w
    sigma = settings["background_width"] * w
    hump = settings["background_hump"]
    d2 = (r[None] - cy[:, None, None]) ** 2 + (c[None] - cx[:, None, None]) ** 2
    bg = (1.0 - hump) + hump * np.exp(-d2 / np.float32(2 * sigma ** 2))
    bg *= 1.0 + settings["background_gradient"] * (r[None] / max(h - 1, 1) - 0.5)
    screen = screen_mask((h, w), settings["screen_radius"])
    bg /= bg[:, screen].mean(axis=1)[:, None, None]
    return bg.astype(np.float32)


# --------------------------------------------------------------------------------------
# Detector imperfections (issue 25)
# --------------------------------------------------------------------------------------
#: ``simulation.imperfections`` keys, all zero = an ideal detector (the patterns of
#: before the imperfections existed).
IMPERFECTION_KEYS = ("pc_jitter", "pc_offset", "pc_drift_error", "camera_tilt_error",
                     "radial_distortion", "band_blur")


def imperfections_of(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The ``imperfections`` block of ``simulation`` settings, checked, every key filled.

    Validated settings (:func:`latentebsd.config.section`) carry the schema's calibrated
    defaults; here a key not given is 0 (an ideal detector), so that a hand-made
    ``{"imperfections": {"pc_jitter": 0.003}}`` is that one imperfection alone.

    Raises
    ------
    ValueError
        A value of the wrong shape or sign, naming ``simulation.imperfections.<key>``.
    """
    given = dict(settings.get("imperfections") or {})
    out = {"pc_jitter": 0.0, "pc_offset": [0.0, 0.0, 0.0], "pc_drift_error": 0.0,
           "camera_tilt_error": 0.0, "radial_distortion": 0.0, "band_blur": 0.0}
    unknown = set(given) - set(out)
    if unknown:
        raise ValueError(f"simulation.imperfections: unknown keys {sorted(unknown)}; "
                         f"expected {list(IMPERFECTION_KEYS)}")
    out.update(given)
    offset = np.asarray(out["pc_offset"], dtype=np.float64)
    if offset.shape != (3,) or not np.isfinite(offset).all():
        raise ValueError(f"simulation.imperfections.pc_offset: expected [dPCx, dPCy, dPCz], "
                         f"got {out['pc_offset']!r}")
    for key in ("pc_jitter", "pc_drift_error", "band_blur"):
        if not float(out[key]) >= 0:
            raise ValueError(f"simulation.imperfections.{key}: expected a number >= 0, "
                             f"got {out[key]!r}")
    out["pc_offset"] = [float(v) for v in offset]
    for key in ("pc_jitter", "pc_drift_error", "camera_tilt_error", "radial_distortion",
                "band_blur"):
        out[key] = float(out[key])
    return out


def pc_errors(map_shape: tuple[int, int], imperfections: Mapping[str, Any],
              rng: np.random.Generator) -> np.ndarray:
    """PC error of every point, ``(n_rows, n_cols, 3)`` in Bruker units: what the
    simulator adds to the nominal PC the indexer is told.

    Three parts, each zero when its setting is 0 (and then no random number is drawn):

    - ``pc_offset``: one constant [dPCx, dPCy, dPCz] (a miscalibrated PC);
    - ``pc_drift_error``: a linear ramp across the map in a random direction, a
      random 3D error direction scaled so the largest error at a map corner is
      ``pc_drift_error`` (the PC-vs-beam-position model is not exact);
    - ``pc_jitter``: independent Gaussian per point and component, std ``pc_jitter``
      (per-point geometry noise: beam position, stage/surface height).
    """
    n_rows, n_cols = map_shape
    err = np.broadcast_to(np.asarray(imperfections["pc_offset"], dtype=np.float64),
                          (n_rows, n_cols, 3)).copy()
    drift = imperfections["pc_drift_error"]
    if drift > 0:
        theta = rng.uniform(0, 2 * np.pi)
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        rows, cols = _grid((n_rows, n_cols))
        # -1 .. 1 across the map along the random in-plane direction theta
        u = np.cos(theta) * (cols - (n_cols - 1) / 2) + np.sin(theta) * (rows - (n_rows - 1) / 2)
        if np.abs(u).max() > 0:
            u = u / np.abs(u).max()
        err += drift * u[..., None] * direction
    jitter = imperfections["pc_jitter"]
    if jitter > 0:
        err += rng.normal(0.0, jitter, size=(n_rows, n_cols, 3))
    return err


@lru_cache(maxsize=8)
def _distortion_coords(pattern_shape: tuple[int, int], k1: float) -> np.ndarray:
    """Source coordinates of radial lens distortion ``r_src = r (1 + k1 r^2)``, with
    ``r`` the distance from the pattern centre over half the width (barrel for
    ``k1 > 0``: the image is squeezed towards the centre)."""
    h, w = pattern_shape
    r, c = np.indices((h, w), dtype=np.float64)
    yc, xc, half = (h - 1) / 2, (w - 1) / 2, w / 2
    dy, dx = (r - yc) / half, (c - xc) / half
    scale = 1.0 + k1 * (dy ** 2 + dx ** 2)
    return np.stack([yc + dy * scale * half, xc + dx * scale * half])


def distort(patterns: np.ndarray, k1: float) -> np.ndarray:
    """Radial (barrel / pincushion) distortion of the camera optics on ``(n, h, w)``
    patterns (:func:`_distortion_coords`); linear interpolation, edges repeated."""
    from scipy.ndimage import map_coordinates

    coords = _distortion_coords(tuple(patterns.shape[1:]), float(k1))
    out = np.empty_like(patterns)
    for i in range(len(patterns)):
        out[i] = map_coordinates(patterns[i], coords, order=1, mode="nearest")
    return out


def project_patterns(quaternions: np.ndarray, pcs: np.ndarray,
                     settings: dict[str, Any], material: str = "nickel",
                     camera_tilt: float | None = None) -> np.ndarray:
    """Noise-free Kikuchi signal, zero mean / unit std over the material's master pattern
    (:func:`master_pattern`).

    Parameters
    ----------
    quaternions
        ``(n, 4)`` orientations (orix convention).
    pcs
        ``(n, 3)`` Bruker PCs.
    settings
        Validated ``simulation`` settings (pattern shape, tilts).
    material
        One of :data:`latentebsd.phases.SIMULATED_MATERIALS`.
    camera_tilt
        Detector tilt to project with (deg), if not ``settings["camera_tilt"]`` (the
        simulator's true tilt when ``imperfections.camera_tilt_error`` is set).

    Returns
    -------
    numpy.ndarray
        ``(n, h, w)`` float32.
    """
    mp, mean, std = master_pattern(material)
    pcs = np.asarray(pcs, dtype=np.float64).reshape(-1, 3)
    quaternions = np.asarray(quaternions, dtype=np.float64).reshape(-1, 4)
    # One PC for the chunk takes kikuchipy's 3x faster fixed-PC path
    pc = pcs[0] if np.all(pcs == pcs[0]) else pcs
    det = EBSDDetector(shape=tuple(settings["pattern_shape"]), pc=pc,
                       sample_tilt=settings["sample_tilt"],
                       tilt=settings["camera_tilt"] if camera_tilt is None else camera_tilt)
    sim = mp.get_patterns(Rotation(quaternions), det, compute=True, dtype_out=np.float32,
                          show_progressbar=False).data
    sim = sim.reshape(len(quaternions), *settings["pattern_shape"])
    return ((sim - np.float32(mean)) / np.float32(std)).astype(np.float32)


def render_chunk(truth: Truth, geometry: ScanGeometry, settings: dict[str, Any],
                 start: int, stop: int, noise_key: int,
                 materials: tuple[str, ...] = DEFAULT_MATERIALS) -> np.ndarray:
    """16-bit raw patterns ``start:stop`` (row-major) of the simulated scan, each from
    the master pattern of its phase (``truth.phase_id`` indexes ``materials``).

    Noise of pattern ``i`` comes from ``default_rng([noise_key, i])``, so the output
    does not depend on ``chunk_size``. The detector imperfections
    (``settings["imperfections"]``, :func:`imperfections_of`) enter here: each pattern is
    projected with its true PC (``truth.pc_used``, when filled; else the geometry's)
    and the true camera tilt, warped by the radial distortion and blurred by
    ``band_blur``; with all of them 0 the computation is the ideal detector's.
    """
    imp = imperfections_of(settings)
    idx = np.arange(start, stop)
    q = truth.quaternion.reshape(-1, 4)[idx]
    pcs = geometry.pc_of(start, stop)
    if truth.pc_used.size:
        # the true PC: the geometry (nominal, what the indexer gets) + the PC error
        pcs = truth.pc_used.reshape(-1, 3)[idx].copy()
    tilt = settings["camera_tilt"] + imp["camera_tilt_error"]
    pw = truth.particle_weight.ravel()[idx]
    part = np.flatnonzero(pw > 0)
    qp = truth.particle_quaternion.reshape(-1, 4)[idx[part]]
    qs, pc_all = np.concatenate([q, qp]), np.concatenate([pcs, pcs[part]])
    if len(materials) == 1:
        k = project_patterns(qs, pc_all, settings, materials[0], tilt)
    else:
        phase = truth.phase_id.ravel()[idx]
        phase = np.concatenate([phase, phase[part]])
        k = np.empty((len(qs), *settings["pattern_shape"]), np.float32)
        for m, material in enumerate(materials):
            sel = np.flatnonzero(phase == m)
            if sel.size:
                k[sel] = project_patterns(qs[sel], pc_all[sel], settings, material, tilt)
    kikuchi, k_part = k[: len(idx)], k[len(idx):]
    if part.size:
        w = pw[part][:, None, None]
        kikuchi[part] = (1 - w) * kikuchi[part] + w * k_part
    if imp["radial_distortion"] != 0:
        kikuchi = distort(kikuchi, imp["radial_distortion"])
    blur = truth.pattern_blur_px.ravel()[idx]
    if imp["band_blur"] > 0:
        # independent blurs add in quadrature; only here, so 0 leaves blur untouched
        blur = np.hypot(blur, imp["band_blur"] * settings["pattern_shape"][1])
    for i in np.flatnonzero(blur > 0):
        kikuchi[i] = gaussian_filter(kikuchi[i], float(blur[i]), mode="nearest")
    contrast = settings["kikuchi_contrast"] * truth.contrast_factor.ravel()[idx]
    lam = settings["counts"] * background(pcs, settings) * (1.0 + contrast[:, None, None] * kikuchi)
    screen = screen_mask(tuple(settings["pattern_shape"]), settings["screen_radius"])
    lam = np.where(screen, np.maximum(lam, 0.0), np.float32(settings["dark_counts"]))
    out = np.empty(lam.shape, np.uint16)
    gain, read_noise = settings["gain"], settings["read_noise"]
    for j, i in enumerate(idx):
        rng = np.random.default_rng([noise_key, int(i)])
        dn = gain * rng.poisson(lam[j]).astype(np.float32)
        if read_noise > 0:
            dn += rng.normal(0.0, read_noise, dn.shape).astype(np.float32)
        out[j] = np.clip(np.rint(dn), 0, 65535).astype(np.uint16)
    return out


# --------------------------------------------------------------------------------------
# Entry point
# --------------------------------------------------------------------------------------
def _check_microstructure(microstructure: str) -> str:
    if microstructure not in MICROSTRUCTURES:
        raise ValueError(f"microstructure: expected one of {MICROSTRUCTURES}, "
                         f"got {microstructure!r}")
    return microstructure


def _check_map_shape(map_shape: Any) -> tuple[int, int]:
    try:
        n_rows, n_cols = (int(v) for v in map_shape)
        ok = all(float(v) == int(v) for v in map_shape)
    except (TypeError, ValueError):
        ok = False
    if not ok or n_rows < 1 or n_cols < 1:
        raise ValueError(f"map_shape: expected [n_rows, n_cols] as two positive integers, "
                         f"got {map_shape!r}")
    return n_rows, n_cols


def assign_phases(truth: Truth, n_materials: int, fractions: Any, seed: int) -> None:
    """Draw the phase of every grain (``truth.grain_id``) with probabilities
    ``fractions`` (``None``: equal), from a generator of its own
    (``default_rng([seed, PHASE_SALT])``), into ``truth.phase_id``; one material: all 0."""
    shape = truth.grain_id.shape
    if n_materials == 1:
        truth.phase_id = np.zeros(shape, np.int8)
        return
    p = np.full(n_materials, 1.0 / n_materials) if fractions is None else \
        np.asarray(fractions, dtype=np.float64)
    if p.shape != (n_materials,) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError(f"fractions: expected {n_materials} non-negative numbers, got {fractions!r}")
    rng = np.random.default_rng([int(seed), PHASE_SALT])
    grains = np.unique(truth.grain_id)
    of_grain = rng.choice(n_materials, size=len(grains), p=p / p.sum())
    truth.phase_id = of_grain[np.searchsorted(grains, truth.grain_id)].astype(np.int8)


def check_materials(materials: Any) -> tuple[str, ...]:
    """``materials`` as a tuple of known, distinct names (default ``("nickel",)``)."""
    names = DEFAULT_MATERIALS if materials is None else tuple(str(m) for m in materials)
    for name in names:
        _material(name)
    if not names or len(set(names)) != len(names):
        raise ValueError(f"materials: expected distinct names of {list(SIMULATED_MATERIALS)}, "
                         f"got {materials!r}")
    return names


def simulated_phases(materials: Any = None) -> list[PhaseSpec]:
    """The phases a simulated scan of ``materials`` is indexed with (its ground truth's
    ``phase_id`` indexes them)."""
    return [SIMULATED_MATERIALS[m] for m in check_materials(materials)]


def simulate_scan(up2_path: str | os.PathLike, truth_path: str | os.PathLike,
                  microstructure: str, map_shape: tuple[int, int],
                  settings: Mapping[str, Any] | None, seed: int, *,
                  grading: Mapping[str, Any] | None = None, progress: bool = True,
                  materials: Any = None, fractions: Any = None) -> None:
    """Simulate one EBSD scan: a UP2 pattern file plus an HDF5 ground-truth file.

    Parameters
    ----------
    up2_path
        Output EDAX UP2 (16-bit, version-3 header), written chunk by chunk and renamed
        into place when complete.
    truth_path
        Output HDF5: group ``geometry`` (:meth:`ScanGeometry.to_h5`, one Bruker PC per
        pattern) and group ``truth`` with ``(n_rows, n_cols)`` arrays ``grain_id``,
        ``quaternion`` (``(..., 4)``, orix convention), ``twin_mask``,
        ``dislocation_density``, ``cell_wall_mask``, ``particle_mask``,
        ``scratch_mask``, ``domain_id``, ``grain_boundary_mask`` and the extras
        ``particle_quaternion``, ``particle_weight``, ``pattern_blur_px``,
        ``contrast_factor``, ``strength_level``, ``strength``, ``phase_id``,
        ``pc_used`` and ``pc_error`` (``(..., 3)``, the PC each pattern was rendered
        with and its error against ``geometry/pc``; see :class:`Truth`); file attrs
        ``microstructure``, ``seed``, ``settings`` (JSON of the resolved settings),
        ``grading`` (JSON: the level factors and :func:`graded_parameters`),
        ``phases`` (JSON, :func:`latentebsd.phases.to_json`), ``master_pattern`` and
        ``imperfections`` (JSON of the applied :func:`imperfections_of`).
    microstructure
        ``"wrought"`` (equiaxed grains, annealing twins, scratches), ``"am"``
        (columnar grains, gradients, rotation domains, dislocation cells, particles) or
        ``"polycrystal"`` (many small random grains).
    map_shape
        ``(n_rows, n_cols)`` of the scan grid.
    settings
        The validated ``simulation`` config section (``None``: the schema's defaults;
        ``latentebsd.config.section("simulation", {...})`` fills a partial one).

        Detector and acquisition (top level):

        - ``pattern_shape`` [h, w]: simulated pattern size in pixels.
        - ``step_um``: scan step (um), stored in the UP2 header.
        - ``pc`` [PCx, PCy, PCz]: Bruker PC at the map centre.
        - ``pc_drift``: PCx change across the map width (fraction of the pattern
          width); PCy/PCz drift along the rows follows the tilt geometry
          (:func:`scan_geometry`). 0 = fixed PC.
        - ``sample_tilt``, ``camera_tilt``: degrees (kikuchipy ``sample_tilt``/``tilt``,
          PyEBSDIndex ``sampleTilt``/``camElev``).
        - ``counts``: mean detected counts per screen pixel (Poisson shot noise).
        - ``gain``: grey levels (DN) per count; one gain for the whole scan, values
          clip at 65535.
        - ``read_noise``: camera read noise, Gaussian sigma in DN.
        - ``dark_counts``: mean counts off the phosphor screen.
        - ``kikuchi_contrast``: band modulation depth: intensity = counts * background
          * (1 + contrast * kikuchi), with ``kikuchi`` the master-pattern signal
          normalised to zero mean and unit std.
        - ``background_hump``: share of the background in a Gaussian hump (0 = flat).
        - ``background_width``: hump sigma as a fraction of the pattern width.
        - ``background_offset``: hump centre below the PC, fraction of the height.
        - ``background_gradient``: relative top-to-bottom brightening.
        - ``screen_radius``: phosphor disc radius as a fraction of half the pattern
          width; pixels outside are dark.
        - ``chunk_size``: patterns generated and written per step (memory ~ 0.4 MB
          per 120x120 pattern in flight); does not change the output.
        - ``scratch_width`` (points), ``scratch_blur`` (sigma, fraction of the pattern
          width), ``scratch_contrast`` (contrast multiplier), ``scratch_rotation_deg``
          (max random lattice rotation per point), ``scratch_density`` (dislocation
          density added in scratches).

        ``imperfections`` block (detector imperfections, issue 25; all 0 = an ideal
        detector): the geometry written to the truth file - the PC and tilt the
        workflow indexes with - is the nominal one; each pattern is rendered with the
        true one. ``pc_jitter`` (std of a per-point Gaussian PC error, Bruker units),
        ``pc_offset`` [dPCx, dPCy, dPCz] (constant PC error), ``pc_drift_error``
        (largest PC error of a linear ramp across the map, :func:`pc_errors`),
        ``camera_tilt_error`` (deg), ``radial_distortion`` (k1, :func:`distort`),
        ``band_blur`` (Gaussian sigma of every pattern's Kikuchi signal, fraction of
        the pattern width). They draw from ``default_rng([seed, IMPERFECTION_SALT])``,
        so they never move the microstructure or the pixel noise.
        ``benchmarks/calibration.py`` measures each against a real scan.

        ``wrought`` block: ``grain_size`` (sqrt of the mean grain area, points),
        ``twin_fraction`` (probability that a grain holds twins), ``twins_per_grain``
        [min, max] lamellae, ``twin_thickness`` [min, max] points for ordinary
        lamellae, ``thin_twin_fraction`` (share of lamellae 1-2 points thick; at least
        one when > 0 and any twin exists), ``n_scratches``.

        ``am`` block: ``grain_width`` (points), ``grain_aspect`` (length / width),
        ``elongation_axis`` (``vertical``: along the map rows' direction, i.e. grains
        are tall; ``horizontal``), ``orientation_gradient_deg`` (max lattice rotation
        per point along a grain), ``domain_size`` (points),
        ``domain_misorientation_deg`` [low, high], ``cell_size`` (points),
        ``cell_wall_width`` (points), ``cell_misorientation_deg`` (max per cell),
        ``wall_rotation_deg`` (max extra random rotation on wall points),
        ``wall_density`` [low, high] (dislocation density at wall centres),
        ``wall_blur`` (blur sigma per unit density, fraction of the pattern width),
        ``particle_fraction`` (share of wall points holding a particle),
        ``particle_weight`` [low, high] (weight of the particle's pattern),
        ``n_scratches``.

        ``polycrystal`` block: ``grain_size``, ``twin_fraction``, ``n_scratches``
        (the rest as ``wrought``).
    seed
        Seeds :func:`numpy.random.default_rng`; the same seed and settings give a
        byte-identical UP2.
    grading
        ``{"levels", "weakest", "axis": "columns" | "rows"}``: the heterogeneity at
        ``levels`` strengths in bands along ``axis`` (module docstring); ``None``: not
        graded.
    progress
        Show a tqdm progress bar.
    materials
        Names of :data:`latentebsd.phases.SIMULATED_MATERIALS` (default ``nickel``);
        several make a multi-phase scan (module docstring).
    fractions
        Probability of each material per grain (default equal).

    Raises
    ------
    ValueError
        Unknown microstructure or material, bad map shape, seed or fractions.
    """
    names = check_materials(materials)
    micro = _check_microstructure(microstructure)
    shape = _check_map_shape(map_shape)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected a non-negative integer, got {seed!r}")
    cfg = config.section("simulation") if settings is None else settings
    rng = np.random.default_rng(int(seed))
    truth = generate_microstructure(micro, shape, cfg, rng, grading)
    assign_phases(truth, len(names), fractions, int(seed))
    geometry = scan_geometry(shape, cfg)
    noise_key = int(rng.integers(2 ** 62))
    imperfections = imperfections_of(cfg)
    # own generator: the microstructure and noise_key above are drawn as without imperfections
    truth.pc_error = pc_errors(shape, imperfections,
                               np.random.default_rng([int(seed), IMPERFECTION_SALT]))
    truth.pc_used = geometry.pc_of(0, geometry.n_patterns).reshape(*shape, 3) + truth.pc_error
    n = geometry.n_patterns
    chunk = cfg["chunk_size"]

    def chunks() -> Iterator[np.ndarray]:
        with tqdm(total=n, unit="pat", desc=f"simulate {micro}", disable=not progress) as bar:
            for start in range(0, n, chunk):
                stop = min(start + chunk, n)
                yield render_chunk(truth, geometry, cfg, start, stop, noise_key, names)
                bar.update(stop - start)

    write_up2(up2_path, chunks(), shape, tuple(cfg["pattern_shape"]), cfg["step_um"])
    write_truth(truth_path, {f.name: getattr(truth, f.name) for f in dataclasses.fields(truth)},
                geometry, micro, int(seed), cfg,
                {"levels": grading_levels(grading).round(6).tolist(),
                 "axis": (grading or {}).get("axis", "columns"),
                 "classes": graded_parameters(micro, cfg, grading)},
                phases=simulated_phases(names), imperfections=imperfections,
                master_pattern="; ".join(
                    "kikuchipy nickel_ebsd_master_pattern_small, 20 kV" if m == "nickel"
                    else f"{m}: kinematical (kikuchipy KikuchiPatternSimulator), 20 kV"
                    for m in names))
