"""latentebsd: EBSD patterns -> VAE latent feature maps, as a reproducible workflow.

Importing this package first imports PyEBSDIndex (when installed) so that its numba
cache setting is in place before kikuchipy/orix load: the other order can segfault in
orix's quaternion code (see ``shared/LIBRARIES.md``).
"""

from __future__ import annotations

try:  # pragma: no cover - import-order guard, nothing to test
    import pyebsdindex  # noqa: F401
except ImportError:  # pyebsdindex is a hard dependency, but keep torch-only use cheap
    pass

__version__ = "0.1.0"
