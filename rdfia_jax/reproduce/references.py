"""The reference numbers a reproduction is measured against, each citing where it comes from.

``report`` values are the student report's (``spec/report.txt``); ``lab`` values are those measured with
a PyTorch rewrite of the practical, or the practical's stated expectations (``spec/LAB.md``). A row's
``check`` says how a measured value is compared: ``"abs"`` -- within ``tol`` of the target (the report's
value, else the lab's); ``"min"`` / ``"max"`` -- at least / at most ``bound``; ``"claim"`` -- a
qualitative claim of the report measured as a margin that must be > 0 (e.g. DANN minus source-only);
``"none"`` -- no comparable measurement exists (shown, not judged).
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class Reference:
    """One number of the report (or of the lab's measurements) and how to compare a measurement to it.

    Attributes:
      key: identifier the section adapters use for their measured value.
      section: "1".."4" (the report's section).
      label: what is measured, as a table row says it.
      report, lab: the report's and the PyTorch practical's values (None: none given).
      check: "abs" | "min" | "max" | "claim" (see the module docstring).
      tol: tolerance of "abs"; bound: the limit of "min" / "max".
      needs_pretrained: meaningful only with converted ImageNet weights.
      data: the data it is defined on ("MNIST", "15 Scene", ...); shown in the table.
      source: where the reference numbers come from.
      fmt: how values are printed ("pct", "int", "f4", "f3").
      epochs: the training length the reference value is for; a shorter measured run is not judged against it.
    """

    key: str
    section: str
    label: str
    report: float | None
    lab: float | None
    check: str = "abs"
    tol: float = 0.0
    bound: float | None = None
    needs_pretrained: bool = False
    data: str = ""
    source: str = ""
    fmt: str = "f4"
    epochs: int | None = None

    @property
    def target(self) -> float | None:
        return self.report if self.report is not None else self.lab

    def describe_check(self) -> str:
        if self.check == "abs":
            return f"within ±{format_value(self.tol, self.fmt)}" if self.tol else "exact"
        if self.check == "min":
            return f">= {format_value(self.bound, self.fmt)}"
        if self.check == "max":
            return f"<= {format_value(self.bound, self.fmt)}"
        if self.check == "claim":
            return "margin > 0"
        return "—"


def format_value(v, fmt: str = "f4") -> str:
    """A reference or measured value as the tables print it."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if fmt == "int":
        return f"{int(round(v)):,}"
    if fmt == "pct":
        return f"{100 * v:.2f} %"
    if fmt == "f3":
        return f"{v:.3f}"
    return f"{v:.4f}"


_REPORT = "report.txt"
_LAB = "LAB.md"

REFERENCES: tuple[Reference, ...] = (
    # ---- 1.1 VGG16
    Reference("s1.params_total", "1", "VGG16 parameters (Figure 1)", 138_357_544, 138_357_544, data="architecture",
              source=f"{_REPORT} 1.1 Figure 1; {_LAB} 1.1", fmt="int"),
    Reference("s1.params_conv", "1", "VGG16 convolution parameters", None, 14_714_688, data="architecture",
              source=f"{_LAB} 1.1 (conv 14,714,688)", fmt="int"),
    Reference("s1.params_fc6", "1", "VGG16 fc6 parameters", 102_764_544, 102_764_544, data="architecture",
              source=f"{_REPORT} Figure 1 row fc6; {_LAB} 1.1", fmt="int"),
    Reference("s1.params_fc8", "1", "VGG16 fc8 parameters", 4_097_000, 4_097_000, data="architecture",
              source=f"{_REPORT} Figure 1 row fc8; {_LAB} 1.1", fmt="int"),
    Reference("s1.photo_top1", "1", "top-1 probability on the authors' photo (Egyptian cat, Fig. 3)", 0.1029, None,
              check="none", needs_pretrained=True, data="authors' photos (unavailable)",
              source=f"{_REPORT} 1.1 q3; {_LAB} 1.1 'Report checks'", fmt="pct"),
    # ---- 1.2 transfer on 15 Scene
    Reference("s1.relu7_resize", "1", "15 Scene: relu7 + LinearSVC, resize 224", 0.888107, None, tol=0.01,
              needs_pretrained=True, data="15 Scene", source=f"{_LAB} 1.2 table (report 1.2)"),
    Reference("s1.relu7_crop", "1", "15 Scene: relu7 + LinearSVC, center crop", 0.905863, 0.896, tol=0.01,
              needs_pretrained=True, data="15 Scene", source=f"{_LAB} 1.2 table; independent run 0.896"),
    Reference("s1.relu6", "1", "15 Scene: relu6 + LinearSVC", 0.918928, 0.912, tol=0.01,
              needs_pretrained=True, data="15 Scene", source=f"{_LAB} 1.2 table; independent run 0.912 (L2)"),
    # ---- 2 visualization
    Reference("s2.fool_iters", "2", "fooling quail -> stingray (SqueezeNet): iterations to fool", None, 100,
              check="max", bound=100, needs_pretrained=True, data="imagenet_val_25", fmt="int",
              source=f"{_LAB} 2 'under 100 iterations expected'; {_REPORT} 2.2 Figures 18-19"),
    Reference("s2.small_fool_rate", "2", "small classifier: fooling success rate (lr 1, cap 100)", None, 1.0,
              check="min", bound=0.95, data="digits / MNIST", fmt="f3",
              source=f"{_LAB} 2 (every fooling image reaches its target in under 100 iterations)"),
    Reference("s2.small_classvis_judge", "2", "small classifier: class visualizations recognised by an "
              "independent network", None, None, check="min", bound=0.5, data="digits / MNIST", fmt="f3",
              source=f"{_REPORT} 2.3 (class visualizations show the class); bound set here (chance 0.1)"),
    # ---- 3 DANN
    Reference("s3.source_only_mnist", "3", "source-only: MNIST test accuracy", None, 0.9918, tol=0.01,
              data="MNIST", source=f"{_LAB} 3 (PyTorch rewrite; expected > 0.99)", epochs=10),
    Reference("s3.source_only_mnistm", "3", "source-only: MNIST-M test accuracy", None, 0.5469, tol=0.04,
              data="MNIST-M", source=f"{_LAB} 3 (PyTorch rewrite; expected 0.53-0.57; paper 0.5225)", epochs=10),
    Reference("s3.dann_mnist", "3", "DANN: MNIST test accuracy", None, 0.9874, tol=0.01,
              data="MNIST", source=f"{_LAB} 3 (PyTorch rewrite, 20 epochs, one seed)", epochs=20),
    Reference("s3.dann_mnistm", "3", "DANN: MNIST-M test accuracy", None, 0.8132, tol=0.04,
              data="MNIST-M", source=f"{_LAB} 3 (PyTorch rewrite; expected > 0.73; paper 0.7666)", epochs=20),
    Reference("s3.dann_gain", "3", "DANN minus source-only on the target domain", None, 0.8132 - 0.5469,
              check="claim", data="any pair", source=f"{_REPORT} 3 Figures 32-37 (DA mixes the domains); "
              f"{_LAB} 3 measured 0.8132 - 0.5469"),
    # ---- 4 GANs
    Reference("s4.g_params", "4", "DCGAN generator parameters", None, 369_600, data="architecture", fmt="int",
              source=f"{_LAB} 4"),
    Reference("s4.d_params", "4", "DCGAN discriminator parameters", None, 166_848, data="architecture", fmt="int",
              source=f"{_LAB} 4"),
    Reference("s4.cg_params", "4", "cDCGAN generator parameters", None, 3_075_840, data="architecture", fmt="int",
              source=f"{_LAB} 4"),
    Reference("s4.cd_params", "4", "cDCGAN discriminator parameters", None, 2_642_433, data="architecture",
              fmt="int", source=f"{_LAB} 4"),
    Reference("s4.dcgan_confidence", "4", "DCGAN after 5 epochs: mean classifier confidence", None, 0.857,
              tol=0.05, data="MNIST", fmt="f3", source=f"{_LAB} 4 (PyTorch rewrite, 2,000 samples)", epochs=5),
    Reference("s4.dcgan_coverage", "4", "DCGAN after 5 epochs: class coverage", None, 0.985, tol=0.03,
              data="MNIST", fmt="f3", source=f"{_LAB} 4 (PyTorch rewrite)", epochs=5),
    Reference("s4.digits_confidence", "4", "DCGAN on the embedded digits: mean classifier confidence", None,
              None, check="min", bound=0.80, data="digits", fmt="f3",
              source="threshold set here for 'samples look like digits' (real digits score 0.999; "
              "30 epochs on the digits measured 0.913)"),
    Reference("s4.digits_coverage", "4", "DCGAN on the embedded digits: class coverage", None, None,
              check="min", bound=0.90, data="digits", fmt="f3",
              source="threshold set here (1 = all 10 classes equally often)"),
    Reference("s4.cgan_label_acc", "4", "cDCGAN: label accuracy", None, 0.993, tol=0.02, data="MNIST", fmt="f3",
              source=f"{_LAB} 4 (PyTorch rewrite)", epochs=5),
)
BY_KEY = {r.key: r for r in REFERENCES}
