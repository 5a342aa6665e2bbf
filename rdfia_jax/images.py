"""Compatibility names for image decoding and resizing; the code lives in :mod:`rdfia_jax.data.decode`
(the one decoder) and :mod:`rdfia_jax.data.transforms` (the one resize/crop). New code imports from there."""

from rdfia_jax.data.decode import (IMAGE_EXTENSIONS, array_to_image, expand_inputs, list_images, open_image,
                                   to_rgb)
from rdfia_jax.data.transforms import RESIZE_MODES, load_images, resize_image, to_unit

__all__ = ["IMAGE_EXTENSIONS", "RESIZE_MODES", "array_to_image", "expand_inputs", "list_images", "load_images",
           "open_image", "resize_image", "to_rgb", "to_unit"]
