"""The ImageNet models and the one model contract every section uses.

* :func:`create` builds an NNX module (random weights); ``rdfia_jax.weights.load_network`` builds a
  :class:`Network` with converted weights.
* :class:`Network` holds a split module (``graphdef``, ``state``) with its input preprocessing.
* :func:`forward` is the pure function ``(graphdef, state, x, capture) -> (logits, acts)`` that hot
  paths jit once (``graphdef`` and ``capture`` static); :meth:`Network.logits_fn` and
  :meth:`Network.features_fn` give ready-jitted closures.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rdfia_jax.errors import RdfiaError
from rdfia_jax.models.imagenet_models import VGG16, AlexNet, Fire, SqueezeNet11
from rdfia_jax.preprocess import TORCHVISION, Preprocessing
from rdfia_jax import xla

MODEL_CLASSES = {"vgg16": VGG16, "alexnet": AlexNet, "squeezenet1_1": SqueezeNet11}
MODEL_NAMES = tuple(MODEL_CLASSES)
_ALIASES = {"squeezenet": "squeezenet1_1", "squeezenet1.1": "squeezenet1_1", "vgg": "vgg16"}


def canonical_name(name: str) -> str:
    """Validate a model name (a few aliases accepted) and return its canonical form."""
    key = _ALIASES.get(name.lower(), name.lower())
    if key not in MODEL_CLASSES:
        raise RdfiaError(f"unknown model {name!r}; choose one of: {', '.join(MODEL_NAMES)}")
    return key


def create(name: str, *, rngs: nnx.Rngs | None = None, seed: int = 0, num_classes: int = 1000,
           width: float = 1.0, dtype: Any = None) -> nnx.Module:
    """Build a model with random weights.

    Without ``rngs`` the parameters are drawn on the host with NumPy from ``seed`` (torchvision's
    scheme: convolutions kaiming-normal fan-out, linears N(0, 0.01), zero biases) into the abstract
    structure: XLA compiles every NNX initializer separately, which costs tens of seconds on 2 cores.

    Args:
      name: one of :data:`MODEL_NAMES`.
      rngs: parameter RNG; when given, initialization runs eagerly with it.
      seed: seed of the jitted initialization (used when ``rngs`` is None).
      num_classes: size of the last layer.
      width: channel multiplier (1.0 is the published architecture; smaller values are for tests).
      dtype: computation dtype (e.g. ``jnp.bfloat16``); parameters stay float32.
    Returns:
      The NNX module.
    """
    cls = MODEL_CLASSES[canonical_name(name)]
    kwargs = dict(num_classes=num_classes, width=width, dtype=dtype)
    if rngs is not None:
        return cls(rngs=rngs, **kwargs)
    graphdef, abstract_state = nnx.split(nnx.eval_shape(lambda: cls(rngs=nnx.Rngs(0), **kwargs)))
    return nnx.merge(graphdef, _host_init(abstract_state, seed))


def _host_init(abstract_state: nnx.State, seed: int) -> nnx.State:
    rng = np.random.default_rng(seed)

    def draw(path, leaf):
        shape, dtype = leaf.shape, leaf.dtype
        if not any(getattr(k, "key", None) == "kernel" for k in path):
            return jnp.zeros(shape, dtype)
        if len(shape) == 4:  # HWIO conv kernel: kaiming normal, fan-out
            std = np.sqrt(2.0 / (shape[0] * shape[1] * shape[3]))
        else:
            std = 0.01
        return jnp.asarray(rng.standard_normal(shape, dtype=np.float32) * np.float32(std), dtype)

    return jax.tree_util.tree_map_with_path(draw, abstract_state)


def abstract(name: str, **kwargs) -> nnx.Module:
    """The module's structure with ``ShapeDtypeStruct`` leaves: no parameter memory allocated."""
    return nnx.eval_shape(lambda: create(name, rngs=nnx.Rngs(0), **kwargs))


def activation_names(name: str) -> tuple[str, ...]:
    """Names accepted by ``capture`` for a model."""
    return abstract(name, width=1.0 / 64).activation_names


@xla.jit(static_argnums=(0, 3))
def _forward_jit(graphdef, state, x, capture):
    return nnx.merge(graphdef, state)(x, capture=capture)


def forward(graphdef: nnx.GraphDef, state: nnx.State, x: jnp.ndarray, capture: tuple[str, ...] = (),
            dropout_key: jax.Array | None = None, perturb: dict | None = None):
    """Pure forward pass: ``(logits, {name: activation})``. Safe to call inside ``jax.jit``/``grad``.

    ``perturb`` ({layer: array}) is added to those activations; differentiate w.r.t. it (at zero) to
    get the gradient of any output w.r.t. any named layer.
    """
    if perturb:
        return nnx.merge(graphdef, state)(x, capture=capture, dropout_key=dropout_key, perturb=perturb)
    return nnx.merge(graphdef, state)(x, capture=capture, dropout_key=dropout_key)


#: Models whose forward passes compile faster programs on the CPU with XLA's default kernels than
#: with the YNNPACK fusions of :func:`rdfia_jax.xla.compiler_options` (``benchmarks/RESULTS.md``).
CPU_XLA_KERNELS = frozenset({"vgg16"})


def cpu_tuned_kernels(name: str) -> bool:
    """Whether ``name``'s forward passes should be compiled with rdfia-jax's tuned CPU kernels
    (``xla.jit(..., tuned_kernels=...)``); off the CPU the choice does not matter."""
    return canonical_name(name) not in CPU_XLA_KERNELS


def forward_chunked(graphdef: nnx.GraphDef, state: nnx.State, x: jnp.ndarray, capture: tuple[str, ...] = (),
                    chunk: int | None = None):
    """:func:`forward` over consecutive chunks of ``chunk`` images inside one ``lax.map``.

    One compiled program whatever the batch size, results equal to :func:`forward` (up to float
    rounding), with the activations of one chunk alive at a time: it bounds memory, and it is how
    ``benchmarks/vgg16_kernels_ab.py`` compares batched and chunked programs (no model is chunked by
    default since VGG16 runs batched on XLA's default CPU kernels, :data:`CPU_XLA_KERNELS`). Falls
    back to one :func:`forward` call when ``chunk`` is None, covers the whole batch or does not
    divide it.

    Returns:
      ``(logits, {name: activation})`` as :func:`forward`.
    """
    n = x.shape[0]
    if not chunk or chunk >= n or n % chunk:
        return forward(graphdef, state, x, capture)
    chunks = x.reshape((n // chunk, chunk) + x.shape[1:])
    logits, acts = jax.lax.map(lambda xc: forward(graphdef, state, xc, capture), chunks)

    def unchunk(a):
        return a.reshape((n,) + a.shape[2:])

    return unchunk(logits), {k: unchunk(v) for k, v in acts.items()}


@dataclasses.dataclass
class Network:
    """A model ready for use: split NNX module + the preprocessing its weights need.

    Attributes:
      name: canonical model name.
      graphdef: static structure from ``nnx.split``.
      state: parameters (a ``nnx.State`` pytree).
      preprocessing: how RGB [0, 1] images become model inputs.
      weights_desc: where the weights came from ("RANDOM ..." for random weights).
    """

    name: str
    graphdef: nnx.GraphDef
    state: nnx.State
    preprocessing: Preprocessing = TORCHVISION
    weights_desc: str = "RANDOM weights (outputs are meaningless)"

    @classmethod
    def from_module(cls, name: str, module: nnx.Module, preprocessing: Preprocessing = TORCHVISION,
                    weights_desc: str = "RANDOM weights (outputs are meaningless)") -> "Network":
        graphdef, state = nnx.split(module)
        return cls(canonical_name(name) if name in MODEL_CLASSES or name.lower() in _ALIASES else name,
                   graphdef, state, preprocessing, weights_desc)

    @property
    def is_random(self) -> bool:
        return self.weights_desc.startswith("RANDOM")

    @property
    def activation_names(self) -> tuple[str, ...]:
        return nnx.merge(self.graphdef, self.state).activation_names

    def module(self) -> nnx.Module:
        return nnx.merge(self.graphdef, self.state)

    def apply(self, state: nnx.State, x: jnp.ndarray, capture: tuple[str, ...] = ()):
        """Pure ``(state, x) -> (logits, acts)`` for this network's structure (for grad / jit)."""
        return forward(self.graphdef, state, x, capture)

    def logits(self, x: jnp.ndarray) -> jnp.ndarray:
        """Jitted logits of normalized inputs (compiled once per input shape)."""
        return _forward_jit(self.graphdef, self.state, x, ())[0]

    def activations(self, x: jnp.ndarray, capture: tuple[str, ...]) -> dict[str, jnp.ndarray]:
        """Jitted named activations of normalized inputs."""
        return _forward_jit(self.graphdef, self.state, x, tuple(capture))[1]

    def features_fn(self, layer: str) -> Callable[[nnx.State, jnp.ndarray], jnp.ndarray]:
        """A jitted pure ``(state, x) -> activation of layer``; later layers are never computed (DCE)."""
        if layer not in self.activation_names:
            raise RdfiaError(f"unknown layer {layer!r} for model {self.name!r}; "
                             f"available layers: {', '.join(self.activation_names)}")
        graphdef = self.graphdef
        return xla.jit(lambda state, x: forward(graphdef, state, x, (layer,))[1][layer])


__all__ = ["MODEL_NAMES", "Network", "create", "abstract", "forward", "canonical_name", "activation_names",
           "VGG16", "AlexNet", "SqueezeNet11", "Fire"]
