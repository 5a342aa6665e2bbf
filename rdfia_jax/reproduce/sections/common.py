"""What the section adapters share: calling a subcommand in-process, and recording results."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from rdfia_jax.errors import RdfiaError


def cli(argv: list[str]) -> None:
    """Run ``rdfia-jax ARGV`` in this process; errors propagate (RdfiaError with the command's message)."""
    from rdfia_jax.cli import build_parser

    args = build_parser().parse_args([str(a) for a in argv])
    status = args.func(args)
    if status:
        raise RdfiaError(f"`rdfia-jax {' '.join(map(str, argv))}` exited with status {status}")


def run_flags(*, data_dir, smoke: bool, resume: bool) -> list:
    """The options every section's commands share: ``--data-dir`` (when given), ``--smoke``, ``--resume``."""
    return (["--data-dir", data_dir] if data_dir else []) + (["--smoke"] if smoke else []) + \
        (["--resume"] if resume else [])


def figure_label(network, random_weights: bool) -> str:
    """The weights as a figure title says them: short (the full description, with the converted file's path,
    is in the section's notes and captions; in a title it runs past the figure's edges)."""
    if random_weights:
        return "RANDOM WEIGHTS (meaningless)"
    return f"pretrained: {network.weights_desc.split(' (')[0]}"  # e.g. "torchvision vgg16-397923af.pth"


def read_json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise RdfiaError(f"{path}: expected the command's output, could not read it ({err})") from None


@dataclasses.dataclass
class SectionResult:
    """What a section adapter hands the report.

    Attributes:
      measured: reference key -> {"value", "random_weights", "note", "epochs", "failed"} (keys of
        references.BY_KEY); "failed" says why a run on real weights gave no value (e.g. not fooled).
      extra: further measured numbers without a reference: {"label", "value", "note"}.
      figures: {"report": "Figures 38-40", "caption", "path" (relative to the section folder), "kind"}.
      notes: lines shown under the section's heading (data used, weights, budget cuts).
      seeds: the seeds the section used.
    """

    measured: dict = dataclasses.field(default_factory=dict)
    extra: list = dataclasses.field(default_factory=list)
    figures: list = dataclasses.field(default_factory=list)
    notes: list = dataclasses.field(default_factory=list)
    seeds: list = dataclasses.field(default_factory=list)

    def measure(self, key: str, value, *, random_weights: bool = False, note: str = "",
                epochs: int | None = None, failed: str | None = None) -> None:
        """Record a reference row's value; ``failed`` (with ``value`` None) says why the measurement gave none."""
        from rdfia_jax.reproduce.references import BY_KEY

        if key not in BY_KEY:
            raise KeyError(f"no reference {key!r}")
        self.measured[key] = {"value": None if value is None else float(value), "random_weights": random_weights,
                              "note": note, "epochs": epochs, "failed": failed}

    def add(self, label: str, value, note: str = "") -> None:
        self.extra.append({"label": label, "value": value if isinstance(value, (str, type(None))) else float(value),
                           "note": note})

    def figure(self, report: str, caption: str, path: Path, root: Path, kind: str = "image") -> None:
        """Record a figure file (must exist) under the report's figure number(s)."""
        path = Path(path)
        if not path.is_file():
            raise RdfiaError(f"expected figure {path} was not written")
        self.figures.append({"report": report, "caption": caption, "path": str(path.relative_to(root)),
                             "kind": kind})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)
