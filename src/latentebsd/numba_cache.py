"""The workflow owns numba's on-disk cache: one location, no races, no corrupt entries.

kikuchipy, orix and PyEBSDIndex compile their numba functions with ``cache=True``.
Left alone, three things go wrong on a fresh machine (``benchmarks/RESULTS.md``,
"numba's cache"):

1. **Two processes that compile different signatures of one function at the same
   time corrupt its cache for good.** numba's ``IndexDataCacheFile.save`` reads the
   index, picks the first free data-file number, writes the index, then the data.
   Both processes pick ``<function>.1.nbc``; the last index written maps *its*
   signature to a file that the other process may have overwritten with code for the
   other signature. Every later process that loads that signature gets machine code
   for other argument types and dies with SIGSEGV, until the files are deleted.
2. **Two cache locations.** Importing PyEBSDIndex sets ``NUMBA_CACHE_DIR`` to
   ``~/.pyebsdindex/numbacache``; functions decorated before that import cache in the
   ``__pycache__`` folders of site-packages, those after it in the home directory -
   a shared file system on a cluster, written by every node at once.
3. **Every parallel job compiles the same functions** (PyEBSDIndex: ~100 s) when the
   cache is cold.

:func:`install` (called by ``import latentebsd``, before anything imports numba)
fixes all three at the root, inside numba's cache class:

- every cached function of every library goes to **one directory**,
  :func:`cache_dir` (``$LATENTEBSD_NUMBA_CACHE_DIR``; else node-local ``/tmp`` in a
  SLURM job; else ``~/.cache/latentebsd/numba``), whatever PyEBSDIndex sets;
- **one process compiles, the others wait and load**: a process that misses the cache
  holds an exclusive ``flock`` on the function's ``.lock`` file from the miss until
  its result is saved (reentrant within the process, released after at most
  :data:`COMPILE_WAIT_S` by a waiter that then compiles itself);
- **saving is atomic** across processes (index read-modify-write under the lock);
- **a loaded entry is checked** against the signature asked for; one that holds
  another signature's code (a cache corrupted before, or by a process without this
  guard) is logged and recompiled, which overwrites it - never a segfault.

Only numba's ``Cache`` / ``IndexDataCacheFile`` / cache-locator classes are touched;
the patch is applied when ``numba.core.caching`` is first imported (an import hook),
so jobs that never use numba do not pay for importing it.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.abc
import importlib.machinery
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENV_VAR = "LATENTEBSD_NUMBA_CACHE_DIR"
#: Longest wait for another process's compilation before compiling anyway (seconds).
COMPILE_WAIT_S = 300.0
_PATCHED = "_latentebsd_patched"
_held: dict[str, Any] = {}  # lock path -> open file, for locks this process holds


def cache_dir() -> Path:
    """Where every numba cache file of this process goes.

    ``$LATENTEBSD_NUMBA_CACHE_DIR`` if set; inside a SLURM job a node-local directory
    (``$TMPDIR`` or ``/tmp``, per user), so that nodes never write one cache on a
    shared file system; else ``~/.cache/latentebsd/numba`` (kept between runs).
    """
    given = os.environ.get(ENV_VAR)
    if given:
        return Path(given).expanduser()
    if os.environ.get("SLURM_JOB_ID"):
        return Path(os.environ.get("TMPDIR") or tempfile.gettempdir()) / f"latentebsd-numba-{os.getuid()}"
    return Path.home() / ".cache" / "latentebsd" / "numba"


@contextlib.contextmanager
def _flock(path: str) -> Iterator[None]:
    """Exclusive lock on ``path`` (reentrant: a no-op if this process holds it)."""
    if path in _held:
        yield
        return
    with open(path, "a+b") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        _held[path] = f
        try:
            yield
        finally:
            del _held[path]
            fcntl.flock(f, fcntl.LOCK_UN)


def _acquire_compile_lock(path: str) -> None:
    """Hold ``path`` until :func:`_release_compile_lock`; wait at most COMPILE_WAIT_S."""
    if path in _held:
        return
    f = open(path, "a+b")
    deadline = time.monotonic() + COMPILE_WAIT_S
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            if time.monotonic() > deadline:
                log.warning("waited %.0f s for %s; compiling without it", COMPILE_WAIT_S, path)
                f.close()
                return
            time.sleep(0.2)
    _held[path] = f


def _release_compile_lock(path: str) -> None:
    f = _held.pop(path, None)
    if f is not None:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


def _checked_load(cache: Any, sig: Any, target_context: Any) -> Any:
    """The cached compile result of ``sig``, or ``None`` for a miss - also when the entry
    is unreadable or holds code for another signature (it is then recompiled and
    overwritten)."""
    # numba is imported lazily everywhere here: `import latentebsd` must not load it
    from numba.core import caching, sigutils

    key = cache._index_key(sig, target_context.codegen())
    try:
        data = cache._cache_file.load(key)
    except Exception as exc:  # an unreadable index or data file: a cache miss
        log.warning("numba cache of %s unreadable (%s); recompiling", cache._name, exc)
        return None
    if data is None:
        return None
    if isinstance(cache._impl, caching.CompileResultCacheImpl):
        wanted = tuple(sigutils.normalize_signature(sig)[0])
        try:
            cached = tuple(data[3].args)
        except Exception:
            cached = None
        if cached != wanted:
            log.warning("numba cache entry of %s holds code for %s, not %s (corrupted by "
                        "a concurrent compile); recompiling", cache._name, cached, wanted)
            return None
    try:
        return cache._impl.rebuild(target_context, data)
    except Exception as exc:
        log.warning("numba cache entry of %s could not be loaded (%s); recompiling",
                    cache._name, exc)
        return None


def _patch_locator(caching: Any, root: Path) -> None:
    """Every cached function under ``root`` (numba asks ``config.CACHE_DIR``, which
    PyEBSDIndex changes at import)."""
    # numba >= 0.61 names it UserProvidedCacheLocator, older versions with a "_"
    locator = getattr(caching, "UserProvidedCacheLocator", None) or caching._UserProvidedCacheLocator

    def locator_init(self, py_func, py_file):  # noqa: ANN001
        self._py_file = py_file
        self._lineno = py_func.__code__.co_firstlineno
        self._cache_path = os.path.join(str(root), self.get_suitable_cache_subpath(py_file))

    locator.__init__ = locator_init
    locator.from_function = classmethod(caching._SourceFileBackedLocatorMixin.from_function.__func__)


def _patch_cache(caching: Any) -> None:
    """Atomic index updates, one compiler per function, checked loads."""
    index_file = caching.IndexDataCacheFile
    unlocked_save = index_file.save

    def save(self, key, data):  # noqa: ANN001
        with _flock(self._index_path + ".lock"):
            unlocked_save(self, key, data)

    cache = caching.Cache
    unguarded_save_overload = cache.save_overload

    def load_overload(self, sig, target_context):  # noqa: ANN001
        target_context.refresh()
        if not self._enabled:
            return None
        lock = self._cache_file._index_path + ".lock"
        data = _checked_load(self, sig, target_context)
        if data is None:
            # A miss: wait while another process compiles this function, then look again;
            # keep the lock until our own result is saved (save_overload).
            self._impl.locator.ensure_cache_path()
            _acquire_compile_lock(lock)
            data = _checked_load(self, sig, target_context)
            if data is not None:
                _release_compile_lock(lock)
        return data

    def save_overload(self, sig, data):  # noqa: ANN001
        try:
            unguarded_save_overload(self, sig, data)
        finally:
            _release_compile_lock(self._cache_file._index_path + ".lock")

    index_file.save = save
    cache.load_overload = load_overload
    cache.save_overload = save_overload


def _patch(caching: Any) -> None:
    """Install the guards into numba's ``numba.core.caching`` module (once)."""
    if getattr(caching, _PATCHED, False):
        return
    root = cache_dir()
    root.mkdir(parents=True, exist_ok=True)
    _patch_locator(caching, root)
    _patch_cache(caching)
    setattr(caching, _PATCHED, True)


class _PatchOnImport(importlib.abc.MetaPathFinder):
    """Patches ``numba.core.caching`` right after it is first executed."""

    def find_spec(self, fullname, path, target=None):  # noqa: ANN001
        if fullname != "numba.core.caching":
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or spec.loader is None:
            return None
        exec_module = spec.loader.exec_module

        def exec_and_patch(module):  # noqa: ANN001
            exec_module(module)
            _patch(module)

        spec.loader.exec_module = exec_and_patch
        return spec


def install() -> Path:
    """Own numba's cache for this process (and the processes it starts); idempotent.

    Sets ``NUMBA_CACHE_DIR`` (for child processes and numba's own config) and patches
    numba's cache classes now if numba is already imported, else when it is.
    """
    root = cache_dir()
    os.environ[ENV_VAR] = str(root)
    os.environ["NUMBA_CACHE_DIR"] = str(root)
    if "numba.core.caching" in sys.modules:
        _patch(sys.modules["numba.core.caching"])
    elif not any(isinstance(f, _PatchOnImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _PatchOnImport())
    return root
