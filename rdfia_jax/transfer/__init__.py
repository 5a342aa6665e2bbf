"""Transfer learning on 15 Scene (report section 1.2).

* :mod:`.features` -- features from any layer of VGG16 / AlexNet (or "cut N layers"), sharded over
  devices, cached on disk.
* :mod:`.classifiers` -- L2 + LinearSVC, C chosen by cross-validation on train, PCA, a new FC head.
* :mod:`.report` -- the results table (markdown + CSV) and figures.
* :mod:`.pipeline` -- the whole section as one function (the ``rdfia-jax transfer`` command).
"""
