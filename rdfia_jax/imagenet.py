"""The one ImageNet class-name table (shipped ``imagenet_class_index.json``) and name/index look-ups.

Display form: the index file's names with underscores replaced by spaces (``"Tibetan mastiff"``,
``"great white shark"``), as :func:`class_names` returns them; every command and dataset shows these.
:func:`class_id` also accepts the underscore form and WordNet ids.
"""

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
    """The display names, index order: ``class_names()[85] == "quail"``, ``[2] == "great white shark"``."""
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
