"""The 1000 ImageNet class names (shipped with the package) and name/index look-ups."""

from __future__ import annotations

import functools
import json

from rdfia_jax import paths
from rdfia_jax.errors import RdfiaError


@functools.lru_cache(maxsize=1)
def class_index() -> tuple[tuple[str, str], ...]:
    """((wnid, name), ...) for classes 0..999, from the shipped ``imagenet_class_index.json``."""
    with open(paths.asset("imagenet_class_index.json"), encoding="utf-8") as f:
        raw = json.load(f)
    return tuple((raw[str(i)][0], raw[str(i)][1]) for i in range(len(raw)))


def class_names() -> tuple[str, ...]:
    """Human-readable names, e.g. ``class_names()[85] == "quail"``."""
    return tuple(name.replace("_", " ") for _, name in class_index())


def wnids() -> tuple[str, ...]:
    return tuple(w for w, _ in class_index())


def class_id(spec: str | int) -> int:
    """Resolve a class given as an index ("366"), a name ("gorilla") or a WordNet id ("n02480855")."""
    names = class_names()
    if isinstance(spec, int) or (isinstance(spec, str) and spec.strip().lstrip("-").isdigit()):
        idx = int(spec)
        if not 0 <= idx < len(names):
            raise RdfiaError(f"class index {idx} out of range 0..{len(names) - 1}")
        return idx
    key = spec.strip().lower().replace("_", " ")
    for i, (wnid, name) in enumerate(class_index()):
        if key in (wnid.lower(), name.lower().replace("_", " ")):
            return i
    close = [n for n in names if key in n.lower()][:5]
    hint = f"; did you mean: {', '.join(close)}" if close else ""
    raise RdfiaError(f"unknown ImageNet class {spec!r}{hint}")
