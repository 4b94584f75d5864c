"""latentebsd: EBSD patterns -> VAE latent feature maps, as a reproducible workflow.

Importing the package first takes charge of numba's on-disk cache (one location, no
compile races, no corrupt entries; :mod:`latentebsd.numba_cache`), before kikuchipy,
orix or PyEBSDIndex compile anything. Every workflow job imports it first.
``LATENTEBSD_NUMBA_GUARD=0`` leaves numba as the libraries set it (only to reproduce
the crashes the guard prevents: ``benchmarks/numba_cache_stress.py --unguarded``).
"""

from __future__ import annotations

import os

from latentebsd import numba_cache

if os.environ.get("LATENTEBSD_NUMBA_GUARD", "1") != "0":
    numba_cache.install()

__version__ = "0.1.0"
