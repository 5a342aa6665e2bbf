"""Keras 3 twins of the practical's networks (benchmarks only), written as Keras users write them.

VGG16 is ``keras.applications.VGG16``; AlexNet and SqueezeNet 1.1 (which keras.applications lacks)
are built with the functional API layer for layer as torchvision defines them; the DCGAN / cDCGAN
and DANN networks match ``workloads_gan.torch_dcgan`` / ``torch_cdcgan`` and
``workloads_dann.torch_dann``. Every model is NHWC (Keras' default ``channels_last``).

Import this module only in a process where ``KERAS_BACKEND=jax`` was set before keras was first
imported (the harness's keras worker does so); it refuses another backend. Never imported by the library.
"""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "jax")

import keras  # noqa: E402
from keras import layers, ops  # noqa: E402

if keras.backend.backend() != "jax":
    raise ImportError(f"benchmarks.keras_models needs the JAX backend of keras, got {keras.backend.backend()!r}")


def vgg16() -> keras.Model:
    """ImageNet VGG16 with random weights, 224x224x3 input, logits (no softmax, like torchvision)."""
    return keras.applications.VGG16(weights=None, classifier_activation=None)


def alexnet(num_classes: int = 1000) -> keras.Model:
    """torchvision's AlexNet with the functional API; layer names ``fc6``/``fc7`` for relu7 features.

    torchvision pads the 11x11 stride-4 convolution by 2 and the others by half the kernel; Keras
    has only "valid"/"same", so the 11x11 one takes an explicit ZeroPadding2D(2)."""
    x = inputs = keras.Input((224, 224, 3))
    x = layers.ZeroPadding2D(2)(x)
    x = layers.Conv2D(64, 11, strides=4, activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Conv2D(192, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = layers.Conv2D(384, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    x = layers.Conv2D(256, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(3, 2)(x)  # 6x6x256 at 224x224 (torchvision's adaptive pool is then the identity)
    # torchvision flattens NCHW; the order of the 9216 features differs, the cost does not
    x = layers.Flatten()(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(4096, activation="relu", name="fc6")(x)
    x = layers.Dropout(0.5)(x)
    x = layers.Dense(4096, activation="relu", name="fc7")(x)
    outputs = layers.Dense(num_classes, name="predictions")(x)
    return keras.Model(inputs, outputs, name="alexnet")


def _fire(x, squeeze: int, e1: int, e3: int, name: str):
    s = layers.Conv2D(squeeze, 1, activation="relu", name=f"{name}_squeeze")(x)
    a = layers.Conv2D(e1, 1, activation="relu", name=f"{name}_expand1x1")(s)
    b = layers.Conv2D(e3, 3, padding="same", activation="relu", name=f"{name}_expand3x3")(s)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([a, b])


def squeezenet1_1(num_classes: int = 1000) -> keras.Model:
    """torchvision's SqueezeNet 1.1 with the functional API (fire modules).

    torchvision's max-pools use ``ceil_mode=True``; at 224x224 every pooled size (111, 55, 27) is
    odd, where ceil and floor agree, so Keras' "valid" pooling gives the same 55/27/13 grids."""
    x = inputs = keras.Input((224, 224, 3))
    x = layers.Conv2D(64, 3, strides=2, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(3, 2)(x)
    x = _fire(x, 16, 64, 64, "fire2")
    x = _fire(x, 16, 64, 64, "fire3")
    x = layers.MaxPooling2D(3, 2)(x)
    x = _fire(x, 32, 128, 128, "fire4")
    x = _fire(x, 32, 128, 128, "fire5")
    x = layers.MaxPooling2D(3, 2)(x)
    x = _fire(x, 48, 192, 192, "fire6")
    x = _fire(x, 48, 192, 192, "fire7")
    x = _fire(x, 64, 256, 256, "fire8")
    x = _fire(x, 64, 256, 256, "fire9")
    x = layers.Dropout(0.5)(x)
    x = layers.Conv2D(num_classes, 1, activation="relu", name="conv10")(x)
    outputs = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, outputs, name="squeezenet1_1")


MODELS = {"vgg16": vgg16, "alexnet": alexnet, "squeezenet1_1": squeezenet1_1}

# ----------------------------------------------------------------------------- DCGAN / cDCGAN (report 4)

_CONV_INIT = keras.initializers.RandomNormal(0.0, 0.02)  # the practical's weights_init
_GAMMA_INIT = keras.initializers.RandomNormal(1.0, 0.02)


def _bn():
    # torch BatchNorm2d: momentum 0.1 (Keras counts the other way), eps 1e-5
    return layers.BatchNormalization(momentum=0.9, epsilon=1e-5, gamma_initializer=_GAMMA_INIT)


def _up(filters: int, kernel: int, strides: int, padding: str):
    """ConvTranspose2d(k 4, s 2, p 1) doubles the size = Keras "same"; (k 4, s 1, p 0) on 1x1 = "valid"."""
    return layers.Conv2DTranspose(filters, kernel, strides, padding=padding, use_bias=False,
                                  kernel_initializer=_CONV_INIT)


def _down(filters: int, kernel: int, strides: int, padding: str, use_bias: bool = False):
    """Conv2d(k 4, s 2, p 1) halves the size = Keras "same"; (k 4, s 1, p 0) on 4x4 = "valid"."""
    return layers.Conv2D(filters, kernel, strides, padding=padding, use_bias=use_bias, kernel_initializer=_CONV_INIT)


def dcgan(nz: int = 100, ngf: int = 32, ndf: int = 32) -> tuple[keras.Model, keras.Model]:
    """The practical's DCGAN: G maps z (N, 1, 1, nz) to (N, 32, 32, 1) in [-1, 1]; D maps an image to (N, 1)."""
    g = keras.Sequential([
        keras.Input((1, 1, nz)),
        _up(ngf * 4, 4, 1, "valid"), _bn(), layers.ReLU(),
        _up(ngf * 2, 4, 2, "same"), _bn(), layers.ReLU(),
        _up(ngf, 4, 2, "same"), _bn(), layers.ReLU(),
        _up(1, 4, 2, "same"), layers.Activation("tanh"),
    ], name="generator")
    d = keras.Sequential([
        keras.Input((32, 32, 1)),
        _down(ndf, 4, 2, "same"), _bn(), layers.LeakyReLU(0.2),
        _down(ndf * 2, 4, 2, "same"), _bn(), layers.LeakyReLU(0.2),
        _down(ndf * 4, 4, 2, "same"), _bn(), layers.LeakyReLU(0.2),
        _down(1, 4, 1, "valid"), layers.Activation("sigmoid"), layers.Flatten(),
    ], name="discriminator")
    return g, d


def cdcgan(nz: int = 100) -> tuple[keras.Model, keras.Model]:
    """The practical's conditional DCGAN (functional API): G([z (N,1,1,nz), y one-hot (N,1,1,10)]),
    D([image (N,32,32,1), y one-hot filled over the image (N,32,32,10)]) -> (N, 1)."""
    z, y = keras.Input((1, 1, nz)), keras.Input((1, 1, 10))
    hz = layers.ReLU()(_bn()(_up(256, 4, 1, "valid")(z)))
    hy = layers.ReLU()(_bn()(_up(256, 4, 1, "valid")(y)))
    h = layers.Concatenate()([hz, hy])
    h = layers.ReLU()(_bn()(_up(256, 4, 2, "same")(h)))
    h = layers.ReLU()(_bn()(_up(128, 4, 2, "same")(h)))
    g = keras.Model([z, y], layers.Activation("tanh")(_up(1, 4, 2, "same")(h)), name="cond_generator")

    x, y_fill = keras.Input((32, 32, 1)), keras.Input((32, 32, 10))
    hx = layers.LeakyReLU(0.2)(_down(64, 4, 2, "same")(x))
    hy = layers.LeakyReLU(0.2)(_down(64, 4, 2, "same")(y_fill))
    h = layers.Concatenate()([hx, hy])
    h = layers.LeakyReLU(0.2)(_bn()(_down(256, 4, 2, "same")(h)))
    h = layers.LeakyReLU(0.2)(_bn()(_down(512, 4, 2, "same")(h)))
    out = layers.Flatten()(layers.Activation("sigmoid")(_down(1, 4, 1, "valid", use_bias=True)(h)))
    d = keras.Model([x, y_fill], out, name="cond_discriminator")
    return g, d


# ----------------------------------------------------------------------------- DANN (report 3)


@ops.custom_gradient
def reverse_gradient(x, factor):
    """Identity forward; backward multiplies the gradient by ``-factor`` (``factor`` gets none)."""
    def grad(*args, upstream=None):
        if upstream is None:
            (upstream,) = args
        return ops.negative(factor) * upstream, ops.zeros_like(factor)
    return x, grad


class GradientReversal(layers.Layer):
    """The DANN gradient-reversal layer. Its factor lambda(p) is a non-trainable weight that the
    training loop assigns before each step (the Keras way to feed a per-step constant)."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.factor = self.add_weight(shape=(), initializer="zeros", trainable=False, name="factor")

    def call(self, x):
        return reverse_gradient(x, ops.cast(self.factor, x.dtype))


def dann_network(model_class: type = keras.Model) -> keras.Model:
    """``workloads_dann.torch_dann`` in Keras: (N, 28, 28, 3) -> [class logits (N, 10), domain logits (N, 1)].

    ``model_class``: the functional model's class, e.g. :class:`DANN` for its training step."""
    x = inputs = keras.Input((28, 28, 3))
    x = layers.Conv2D(32, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    x = layers.Conv2D(48, 5, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D(2)(x)
    h = layers.Flatten()(x)  # 7 * 7 * 48 = 2352
    c = layers.Dense(100, activation="relu")(h)
    c = layers.Dense(100, activation="relu")(c)
    c = layers.Dense(10, name="class_logits")(c)
    r = GradientReversal(name="grl")(h)
    r = layers.Dense(100, activation="relu")(r)
    r = layers.Dense(1, name="domain_logits")(r)
    return model_class(inputs, [c, r], name="dann")


class DannLearningRate(keras.optimizers.schedules.LearningRateSchedule):
    """The practical's annealed rate ``0.01 / (1 + 10 p) ** 0.75``, ``p = (step % total) / total``."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def __call__(self, step):
        p = ops.cast(ops.mod(step, self.total_steps), "float32") / self.total_steps
        return 0.01 / ops.power(1.0 + 10.0 * p, 0.75)


class DANN(keras.Model):
    """DANN with the documented Keras-on-JAX custom ``train_step``: ``x`` the concatenated source and
    target batch, ``y = (source labels (n,), domain labels (N, 1))``; loss = cross-entropy on the
    first n class logits + binary cross-entropy with logits on every domain logit."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.loss_tracker = keras.metrics.Mean(name="loss")

    @property
    def metrics(self):
        return [self.loss_tracker]

    def compute_loss_and_updates(self, trainable_variables, non_trainable_variables, x, y, training=False):
        source_y, domain_y = y
        (class_logits, domain_logits), non_trainable_variables = self.stateless_call(
            trainable_variables, non_trainable_variables, x, training=training)
        n = source_y.shape[0]
        loss = (ops.mean(keras.losses.sparse_categorical_crossentropy(source_y, class_logits[:n], from_logits=True))
                + ops.mean(keras.losses.binary_crossentropy(domain_y, domain_logits, from_logits=True)))
        return loss, non_trainable_variables

    def train_step(self, state, data):
        import jax

        trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables = state
        x, y, _ = keras.utils.unpack_x_y_sample_weight(data)
        grad_fn = jax.value_and_grad(self.compute_loss_and_updates, has_aux=True)
        (loss, non_trainable_variables), grads = grad_fn(trainable_variables, non_trainable_variables, x, y,
                                                         training=True)
        trainable_variables, optimizer_variables = self.optimizer.stateless_apply(
            optimizer_variables, grads, trainable_variables)
        metrics_variables = self.loss_tracker.stateless_update_state(metrics_variables, loss)
        logs = {"loss": self.loss_tracker.stateless_result(metrics_variables)}
        return logs, (trainable_variables, non_trainable_variables, optimizer_variables, metrics_variables)


def dann_model(total_steps: int) -> DANN:
    """The compiled DANN: SGD momentum 0.9 with the annealed rate; set ``get_layer("grl").factor``
    before each ``train_on_batch``."""
    model = dann_network(DANN)
    model.compile(optimizer=keras.optimizers.SGD(DannLearningRate(total_steps), momentum=0.9))
    return model


class GAN(keras.Model):
    """The practical's GAN step (D then G) in the documented Keras-on-JAX style: a stateless
    ``train_step(state, data)`` built from ``stateless_call``, ``jax.value_and_grad`` and
    ``optimizer.stateless_apply``.

    The practical trains D and G with two Adam optimizers (learning rates 2e-4 / 5e-4), and
    ``Model.train_on_batch`` carries the state of one optimizer only, so the step is compiled the way
    Keras' JAX trainer compiles ``train_step`` (``jax.jit``, state donated) and called directly:
    ``step = jax.jit(gan.train_step, donate_argnums=0); logs, state = step(state, data)``, with
    ``state = gan.initial_state()``. ``data``: real images (N, 32, 32, 1) in [-1, 1], and for the
    conditional GAN also one-hot labels (N, 10). Like the practical, the G step reuses the D step's
    noise and backpropagates through D after D's update (G's forward is recomputed inside the G
    gradient, the usual JAX-style step; G's batch statistics are taken from the first pass).
    """

    def __init__(self, generator, discriminator, nz: int = 100, conditional: bool = False, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.generator, self.discriminator = generator, discriminator
        self.nz, self.conditional = nz, conditional
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.bce = keras.losses.BinaryCrossentropy()

    def compile(self, d_optimizer, g_optimizer):
        super().compile()
        self.d_optimizer, self.g_optimizer = d_optimizer, g_optimizer
        d_optimizer.build(self.discriminator.trainable_variables)
        g_optimizer.build(self.generator.trainable_variables)

    def initial_state(self) -> tuple:
        """(G trainable, G non-trainable, D trainable, D non-trainable, G optimizer, D optimizer, seed)."""
        def values(vs):
            return [v.value for v in vs]
        return (values(self.generator.trainable_variables), values(self.generator.non_trainable_variables),
                values(self.discriminator.trainable_variables), values(self.discriminator.non_trainable_variables),
                values(self.g_optimizer.variables), values(self.d_optimizer.variables),
                self.seed_generator.state.value)

    def assign_state(self, state) -> None:
        """Writes a state from :meth:`train_step` back into the Keras variables."""
        g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, seed = state
        for refs, vals in ((self.generator.trainable_variables, g_tv), (self.generator.non_trainable_variables, g_ntv),
                           (self.discriminator.trainable_variables, d_tv),
                           (self.discriminator.non_trainable_variables, d_ntv),
                           (self.g_optimizer.variables, g_opt), (self.d_optimizer.variables, d_opt)):
            for ref, v in zip(refs, vals):
                ref.assign(v)
        self.seed_generator.state.assign(seed)

    def _g_inputs(self, z, y):
        return [z, y[:, None, None, :]] if self.conditional else z

    def _d_inputs(self, x, y):
        if not self.conditional:
            return x
        return [x, ops.broadcast_to(y[:, None, None, :], (*x.shape[:3], y.shape[-1]))]

    def _d_loss(self, d_tv, d_ntv, real, fake, y):
        out_real, d_ntv = self.discriminator.stateless_call(d_tv, d_ntv, self._d_inputs(real, y), training=True)
        err_real = self.bce(ops.ones_like(out_real), out_real)
        out_fake, d_ntv = self.discriminator.stateless_call(d_tv, d_ntv, self._d_inputs(fake, y), training=True)
        err_fake = self.bce(ops.zeros_like(out_fake), out_fake)
        return err_real + err_fake, (d_ntv, out_real, out_fake)

    def _g_loss(self, g_tv, g_ntv, d_tv, d_ntv, z, y):
        fake, _ = self.generator.stateless_call(g_tv, g_ntv, self._g_inputs(z, y), training=True)
        out, d_ntv = self.discriminator.stateless_call(d_tv, d_ntv, self._d_inputs(fake, y), training=True)
        return self.bce(ops.ones_like(out), out), (d_ntv, out)

    def train_step(self, state, data):
        import jax

        g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, seed = state
        real, y = (data if self.conditional else (data, None))
        with keras.StatelessScope(state_mapping=[(self.seed_generator.state, seed)]) as scope:
            z = keras.random.normal((real.shape[0], 1, 1, self.nz), seed=self.seed_generator)
        seed = scope.get_current_value(self.seed_generator.state)
        fake, g_ntv = self.generator.stateless_call(g_tv, g_ntv, self._g_inputs(z, y), training=True)

        (loss_d, (d_ntv, out_real, out_fake)), grads = jax.value_and_grad(self._d_loss, has_aux=True)(
            d_tv, d_ntv, real, ops.stop_gradient(fake), y)
        d_tv, d_opt = self.d_optimizer.stateless_apply(d_opt, grads, d_tv)

        (loss_g, (d_ntv, out)), grads = jax.value_and_grad(self._g_loss, has_aux=True)(g_tv, g_ntv, d_tv, d_ntv, z, y)
        g_tv, g_opt = self.g_optimizer.stateless_apply(g_opt, grads, g_tv)
        logs = {"loss_d": loss_d, "loss_g": loss_g, "d_real": ops.mean(out_real), "d_fake": ops.mean(out_fake),
                "d_fake_g": ops.mean(out)}
        return logs, (g_tv, g_ntv, d_tv, d_ntv, g_opt, d_opt, seed)


def gan_model(kind: str = "gan", nz: int = 100) -> GAN:
    """The compiled practical GAN (``kind`` "gan" or "cgan"): Adam(2e-4 D / 5e-4 G, betas (0.5, 0.999), eps 1e-8)."""
    g, d = dcgan(nz) if kind == "gan" else cdcgan(nz)
    model = GAN(g, d, nz=nz, conditional=kind == "cgan")
    model.compile(d_optimizer=keras.optimizers.Adam(2e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8),
                  g_optimizer=keras.optimizers.Adam(5e-4, beta_1=0.5, beta_2=0.999, epsilon=1e-8))
    return model
