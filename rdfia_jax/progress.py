"""One progress reporter for every long loop: a tqdm bar on a terminal, plain lines in a log file.

tqdm switches itself off when stderr is not a terminal (``disable=None``), which left background runs
(``nohup ... > log``) silent for half an hour. :class:`Progress` keeps the bar on a terminal and
otherwise prints one line every 5 % of the work (count, percentage, rate, time left, the latest
metrics) to stderr, flushed, so a log file always tells how far a run got (at most one line per
:data:`PLAIN_MIN_SECONDS`, so short loops write one line, not twenty).
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any, TypeVar

__all__ = ["Progress", "track"]

T = TypeVar("T")

#: Share of the total between two plain lines.
PLAIN_EVERY = 0.05
#: Fewest seconds between two plain lines (the last line is always printed): a 2-second loop logs
#: one line, a 30-minute run one every 5 %.
PLAIN_MIN_SECONDS = 10.0


def _amount(value: float, scale: bool) -> str:
    """A count, with a k/M/G prefix when ``scale`` (bytes)."""
    if not scale:
        return f"{value:.0f}"
    for prefix in ("", "k", "M"):
        if abs(value) < 1000:
            return f"{value:.1f}{prefix}" if prefix else f"{value:.0f}"
        value /= 1000
    return f"{value:.1f}G"


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "?"
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def _format_value(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


class Progress:
    """Progress over ``total`` units of work (steps, images, bytes).

    Use as a context manager, call :meth:`update` as work is done and :meth:`set_postfix` with the
    latest metrics. On a terminal it is a tqdm bar; otherwise (a log file, a pipe) it prints one line
    every 5 % of ``total`` and one at the end; ``enabled=False`` prints nothing.

    Args:
      total: units of work, or ``None`` when unknown (plain mode then prints nothing but the end).
      desc: what is being done, first on each line.
      unit: name of one unit (``"step"``, ``"img"``, ``"B"``).
      initial: units already done (a resumed run); the rate counts only new work.
      enabled: ``False`` for silence.
      unit_scale: show large counts with k/M/G prefixes (for bytes).
      leave: keep the tqdm bar on screen when done.
    """

    def __init__(self, total: int | None, desc: str, *, unit: str = "it", initial: int = 0,
                 enabled: bool = True, unit_scale: bool = False, leave: bool = True):
        self.total, self.desc, self.unit, self.unit_scale = total, desc, unit, unit_scale
        self.done = self.start = initial
        self.postfix: dict[str, Any] = {}
        self._bar = None
        self._plain = False
        self._next_line = math.inf
        self._printed_at = -1  # count at the last plain line
        self._t0 = self._printed_time = time.perf_counter()
        if not enabled:
            return
        from tqdm.auto import tqdm

        bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale, leave=leave,
                   disable=None, dynamic_ncols=True)
        if bar.disable:  # not a terminal
            bar.close()
            self._plain = True
            self._step = max(1, math.ceil(PLAIN_EVERY * total)) if total else 0
            self._next_line = (initial // self._step + 1) * self._step if self._step else math.inf
        else:
            self._bar = bar

    @property
    def is_plain(self) -> bool:
        """True when progress goes out as plain lines (not a terminal)."""
        return self._plain

    def update(self, n: int = 1) -> None:
        """Record ``n`` more units of work."""
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        elif self._plain and self.done >= self._next_line:
            self._next_line = (self.done // self._step + 1) * self._step
            if time.perf_counter() - self._printed_time >= PLAIN_MIN_SECONDS or self.done == self.total:
                self._print_line()

    def set_postfix(self, values: Mapping[str, Any]) -> None:
        """Show ``values`` (e.g. the latest losses) after the count; floats with 3 significant digits."""
        self.postfix = dict(values)
        if self._bar is not None:
            self._bar.set_postfix({k: _format_value(v) for k, v in self.postfix.items()}, refresh=False)

    def close(self) -> None:
        """End the bar; in plain mode print the final line unless the last update already did."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._plain:
            if self.done != self.start and self._printed_at != self.done:
                self._print_line()
            self._plain = False

    def _print_line(self) -> None:
        seconds = time.perf_counter() - self._t0
        new = self.done - self.start
        rate = new / seconds if seconds > 0 else math.nan
        unit = self.unit
        count = _amount(self.done, self.unit_scale)
        if self.total:
            count += f"/{_amount(self.total, self.unit_scale)} {unit} ({100 * self.done / self.total:.0f} %)"
            left = (self.total - self.done) / rate if rate > 0 else math.nan
            eta = f", eta {_duration(left)}"
        else:
            count += f" {unit}"
            eta = ""
        speed = _amount(rate, True) if self.unit_scale else (f"{rate:.0f}" if rate >= 100 else f"{rate:.3g}")
        line = f"{self.desc}: {count}, {speed} {unit}/s{eta}"
        if self.postfix:
            line += "; " + ", ".join(f"{k} {_format_value(v)}" for k, v in self.postfix.items())
        print(line, file=sys.stderr, flush=True)
        self._printed_at = self.done
        self._printed_time = time.perf_counter()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def track(items: Iterable[T], desc: str, *, total: int | None = None, unit: str = "it",
          enabled: bool = True) -> Iterator[T]:
    """Iterate over ``items`` with a :class:`Progress` (``total`` defaults to ``len(items)``)."""
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    with Progress(total, desc, unit=unit, enabled=enabled) as progress:
        for item in items:
            yield item
            progress.update(1)
