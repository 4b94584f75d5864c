"""Write kikuchipy's real 3 x 3 Ni map (``kikuchipy.data.nickel_ebsd_small``) to a file
the workflow can point at: ``config/examples/two_detectors.yaml`` reads it.

    python benchmarks/save_nickel_small.py data/nickel_ebsd_small.h5

The map ships inside kikuchipy (NORDIF UF-1100, 60 x 60 patterns, CC BY 4.0; nothing is
downloaded). It is written as kikuchipy h5ebsd, which keeps what the workflow takes from
the file: the pattern centre of every pattern (Bruker), the sample and detector tilts,
the 1.5 um step and the static background.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import latentebsd  # noqa: F401  (owns numba's cache before kikuchipy loads)
from latentebsd.io.atomic import atomic_path


def save_nickel_small(path: str | Path) -> Path:
    """Save ``kikuchipy.data.nickel_ebsd_small()`` as kikuchipy h5ebsd at ``path``."""
    import kikuchipy as kp

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    signal = kp.data.nickel_ebsd_small()
    if path.suffix.lower() not in (".h5", ".hdf5", ".h5ebsd"):
        raise ValueError(f"{path}: kikuchipy writes h5ebsd to a name ending in .h5")
    with atomic_path(path) as tmp:  # keeps the suffix kikuchipy picks its writer from
        signal.save(tmp, overwrite=True)
    return path


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("path", nargs="?", default="data/nickel_ebsd_small.h5")
    print(save_nickel_small(parser.parse_args().path))
