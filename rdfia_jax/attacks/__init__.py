"""Adversarial attacks: FGSM, PGD (L-inf / L2, targeted or not) and ADef deformations.

All attacks take a pure model function ``apply(params, x) -> logits | (logits, acts)`` on NHWC model
inputs and return an :class:`AttackResult` (adversarial inputs, success, iterations, norms).
"""

from rdfia_jax.attacks.adef import adef
from rdfia_jax.attacks.base import NORMS, AttackResult, PixelBox
from rdfia_jax.attacks.fgsm_pgd import fgsm, pgd

METHODS = ("fgsm", "pgd", "adef")

__all__ = ["AttackResult", "PixelBox", "NORMS", "METHODS", "adef", "fgsm", "pgd"]
