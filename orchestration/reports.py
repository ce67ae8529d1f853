"""Comparison tables: this project's numbers next to a paper's, with the scale each ran at.

Paper numbers live in YAML files under experiments/configs/paper/: rows keyed by
the config values that define them, results per data set as [mean, std].
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from orchestration.config import ExperimentConfig, read_yaml
from orchestration.sweep import SweepResult, cell_statistics


def load_paper(path: Path) -> dict:
    return read_yaml(path)


def _matches(row_values: dict[str, Any], effective: dict[str, Any]) -> bool:
    return all(_normalise(effective.get(k)) == _normalise(v) for k, v in row_values.items())


def _normalise(value: Any) -> Any:
    return tuple(value) if isinstance(value, (list, tuple)) else value


def _format(mean: float, std: float | None, digits: int) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


def comparison_table(result: SweepResult, config: ExperimentConfig, paper: dict | None, scale: str, split: str = "test") -> str:
    """A markdown table: one row per grid cell, ours (mean ± std over seeds) beside the paper's."""
    stats = cell_statistics(result.trials, split)
    metrics: dict[str, str] = (paper or {}).get("metrics") or {
        name: name for cell in stats.values() for name in cell if not name.startswith("_")
    }
    dataset = config.data.name
    header = ["setting", "seeds"]
    for label in metrics.values():
        header += [f"{label} (ours)", f"{label} (paper)"]
    lines = [
        f"### {result.name}: {dataset}, {split} split",
        "",
        f"ours: {scale}",
        f"paper: {(paper or {}).get('scale', 'no reference numbers')} ({(paper or {}).get('source', '')})".rstrip(" ()"),
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    base = config.to_dict()
    for cell in sorted(stats, key=str):
        values = dict(cell)
        effective = _effective(base, values)
        reference_label, reference = _paper_row(paper, dataset, effective)
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell) or "base"
        if reference_label:
            label += f" ({reference_label})"
        trials, _, finished = stats[cell]["_trials"]
        row = [label, f"{finished}/{int(trials)}"]
        for name in metrics:
            mean, std, _ = stats[cell].get(name, (float("nan"), None, 0))
            digits = 3 if abs(mean) < 10 else 2
            paper_value = reference.get(name)
            row += [_format(mean, std if finished > 1 else None, digits), _format(*paper_value, digits) if paper_value else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    failed = [t for t in result.trials if t.status == "failed"]
    if failed:
        lines += ["", f"{len(failed)} trial(s) failed:"] + [f"- {t.values}: {t.error}" for t in failed]
    return "\n".join(lines) + "\n"


def _effective(base: dict, values: dict[str, Any]) -> dict[str, Any]:
    from orchestration.config import flatten

    return flatten(base) | values


def _paper_row(paper: dict | None, dataset: str, effective: dict[str, Any]) -> tuple[str | None, dict]:
    for row in (paper or {}).get("rows", []):
        if _matches(row.get("values", {}), effective) and dataset in row.get("results", {}):
            return row.get("label"), {k: tuple(v) for k, v in row["results"][dataset].items()}
    return None, {}
