"""One results writer for every section: a table of rows as ``results.md``, ``results.csv`` and ``results.json``.

The JSON keeps the raw values (numbers stay numbers) for programs such as ``rdfia-jax reproduce``;
the Markdown and CSV show them formatted. All three are written atomically, so a kill never leaves a
half-written table.
"""

from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

from rdfia_jax.errors import RdfiaError
from rdfia_jax.fileio import atomic_write_bytes


def format_value(value: Any, digits: int = 4) -> str:
    """A cell's text: ``""`` for None, ``"nan"``/``"inf"`` as such, floats to ``digits`` significant digits."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return str(value) if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # JSON has no NaN/inf
    if hasattr(value, "item") and callable(value.item):  # numpy scalars
        return _jsonable(value.item())
    return value


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, digits: int = 4) -> str:
    """The rows as a GitHub Markdown table (``|`` inside a cell becomes ``/``)."""
    lines = ["| " + " | ".join(columns) + " |", "|" + " --- |" * len(columns)]
    for row in rows:
        cells = (format_value(row.get(c), digits).replace("|", "/").replace("\n", " ") for c in columns)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_results(rows: Sequence[Mapping[str, Any]], out_dir: str | Path, *, columns: Sequence[str] | None = None,
                  note: str = "", footer: str = "", stem: str = "results", digits: int = 4) -> dict[str, Path]:
    """Write ``stem.md``, ``stem.csv`` and ``stem.json`` into ``out_dir``, each atomically.

    Args:
      rows: one mapping per table row (column name -> value; missing columns are empty).
      out_dir: folder to write into (created if needed).
      columns: column order (default: the keys of the rows in first-seen order).
      note: text above the Markdown table (and ``"note"`` in the JSON).
      footer: text below the Markdown table (definitions of the columns, ...).
      stem: file name without extension.
      digits: significant digits of floats in the Markdown and CSV.
    Returns:
      ``{"md": path, "csv": path, "json": path}``.
    Raises:
      RdfiaError: a row holds a key that is not in ``columns``.
    """
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    columns = list(columns)
    extra = sorted({k for row in rows for k in row} - set(columns))
    if extra:
        raise RdfiaError(f"results rows have columns not in the table: {extra}")
    out = Path(out_dir)
    paths = {"md": out / f"{stem}.md", "csv": out / f"{stem}.csv", "json": out / f"{stem}.json"}

    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow(columns)
    for row in rows:
        writer.writerow([format_value(row.get(c), digits) for c in columns])
    atomic_write_bytes(paths["csv"], buf.getvalue().encode())

    md = (note.rstrip() + "\n\n" if note else "") + markdown_table(rows, columns, digits=digits)
    md += ("\n" + footer.rstrip() + "\n") if footer else ""
    atomic_write_bytes(paths["md"], md.encode())

    record = {"note": note, "columns": columns,
              "rows": [{c: _jsonable(row.get(c)) for c in columns} for row in rows]}
    atomic_write_bytes(paths["json"], json.dumps(record, indent=1).encode())
    return paths


def read_results(out_dir: str | Path, *, stem: str = "results") -> list[dict]:
    """The rows written by :func:`write_results` (raw values); ``[]`` when there is no table yet.

    Raises:
      RdfiaError: the JSON file exists but is damaged.
    """
    path = Path(out_dir) / f"{stem}.json"
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text())
        return list(record["rows"])
    except (ValueError, KeyError, TypeError) as e:
        raise RdfiaError(f"{path} is damaged ({e}); delete it and rerun to rewrite it") from None
