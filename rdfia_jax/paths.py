"""Where rdfia-jax keeps converted weights, prepared datasets and caches.

Each location can be overridden with an environment variable:

* ``RDFIA_JAX_WEIGHTS`` -- converted weights (default: ``weights/`` of a source checkout, else
  ``~/.cache/rdfia-jax/weights``);
* ``RDFIA_JAX_DATA`` -- raw and prepared datasets (default ``~/.cache/rdfia-jax/data``);
* ``RDFIA_JAX_CACHE`` -- feature caches, trained helper classifiers (default ``~/.cache/rdfia-jax/cache``).
"""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
_CHECKOUT_WEIGHTS = _PACKAGE_DIR.parent / "weights"


def _user_cache() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "rdfia-jax"


def weights_dir() -> Path:
    """Directory holding converted weights (``RDFIA_JAX_WEIGHTS`` overrides)."""
    env = os.environ.get("RDFIA_JAX_WEIGHTS")
    if env:
        return Path(env).expanduser()
    if (_CHECKOUT_WEIGHTS / "README.md").is_file():  # running from a source checkout
        return _CHECKOUT_WEIGHTS
    return _user_cache() / "weights"


def data_dir() -> Path:
    """Directory holding datasets (``RDFIA_JAX_DATA`` overrides)."""
    env = os.environ.get("RDFIA_JAX_DATA")
    return Path(env).expanduser() if env else _user_cache() / "data"


def cache_dir() -> Path:
    """Directory holding derived caches (``RDFIA_JAX_CACHE`` overrides)."""
    env = os.environ.get("RDFIA_JAX_CACHE")
    return Path(env).expanduser() if env else _user_cache() / "cache"


def asset(name: str) -> Path:
    """Path of a file shipped inside the package (``rdfia_jax/assets``)."""
    return _PACKAGE_DIR / "assets" / name
