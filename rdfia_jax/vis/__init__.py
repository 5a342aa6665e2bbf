"""Visualizing a network (report section 2).

* :mod:`rdfia_jax.vis.saliency` -- saliency maps, SmoothGrad, Integrated Gradients, Grad-CAM and the
  model-randomization sanity check;
* :mod:`rdfia_jax.vis.fooling` -- the practical's fooling images (batched ``lax.while_loop``);
* :mod:`rdfia_jax.vis.classvis` -- class / channel / neuron visualization (one compiled ``fori_loop``);
* :mod:`rdfia_jax.vis.figures` -- the section's figures;
* :mod:`rdfia_jax.vis.core` -- checks, class look-up, the trace counter, gradients at a named layer;
* :mod:`rdfia_jax.vis.section` -- the report's whole section 2 (figures and results table), the library
  side of ``rdfia-jax visualize``.

Every method takes a :class:`rdfia_jax.models.Network` (an ImageNet model, or the small MNIST network
via ``rdfia_jax.classifier.get_classifier().network()``) and model-space images.
"""
