"""One module per dataset: ``mnist`` (MNIST, Fashion-MNIST IDX files), ``mnistm`` (MNIST-M), ``digits``
(the embedded sklearn digits and digits_m), ``scene15``, ``imagenet_val25``, ``folder`` (a user's images)."""
