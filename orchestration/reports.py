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


def _format(mean: float, std: float | None) -> str:
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    digits = 3 if abs(mean) < 10 else 2
    return f"{mean:.{digits}f}" + (f" ± {std:.{digits}f}" if std is not None else "")


PIPELINE_CHECK = (
    "**A pipeline check, not a result.** This preset trains toy-sized models for {steps} steps so that every stage "
    "(data, Ray Train, Tune, MLflow, this table) runs in minutes; they learn nothing, so the rows do not differ "
    "for any reason the table's settings name. The laptop-sized preset: `{command}` (what it reaches: README, Results)."
)


def comparison_table(result: SweepResult, config: ExperimentConfig, paper: dict | None, scale: str, learns_with: str | None = None) -> str:
    """A markdown table: one row per grid cell, ours (mean ± std over seeds) beside the paper's.

    The paper file's `metrics` map "split/metric" keys (e.g. test/miou) to column labels.
    `learns_with`: for a preset that only checks the pipeline, the command of one that
    learns; the table then says so above its rows.
    """
    stats = {split: cell_statistics(result.trials, split) for split in ("valid", "test")}
    metrics: dict[str, str] = (paper or {}).get("metrics") or {
        f"test/{name}": name for cell in stats["test"].values() for name in cell if not name.startswith("_")
    }
    dataset = config.data.name
    header = ["setting", "seeds"]
    for label in metrics.values():
        header += [f"{label} (ours)", f"{label} (paper)"]
    source = f" ({paper['source']})" if paper and paper.get("source") else ""
    lines = [
        f"### {result.name}: {dataset}",
        "",
        f"ours: {scale}",
        f"paper: {(paper or {}).get('scale', 'no reference numbers')}{source}",
        "",
        *([PIPELINE_CHECK.format(steps=config.train.steps, command=learns_with), ""] if learns_with else []),
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
    ]
    base = config.to_dict()
    for cell in sorted(stats["test"], key=str):
        values = dict(cell)
        reference_label, reference = _paper_row(paper, dataset, _effective(base, values))
        label = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in cell) or "base"
        if reference_label:
            label += f" ({reference_label})"
        trials, _, finished = stats["test"][cell]["_trials"]
        row = [label, f"{finished}/{int(trials)}"]
        for key in metrics:
            split, name = key.split("/", 1)
            mean, std, _ = stats[split][cell].get(name, (float("nan"), None, 0))
            paper_value = reference.get(key)
            row += [_format(mean, std if finished > 1 else None), _format(*paper_value) if paper_value else "n/a"]
        lines.append("| " + " | ".join(row) + " |")
    failed = [t for t in result.trials if t.status == "failed"]
    if failed:
        lines += ["", f"{len(failed)} trial(s) failed:"] + [f"- {t.values}: {t.error}" for t in failed]
    return "\n".join(lines) + "\n"


def _effective(base: dict, values: dict[str, Any]) -> dict[str, Any]:
    """A cell's flat config as its trials ran it: the base, its variant's overrides, its swept values (the variant's
    name stays, for paper rows keyed by it)."""
    from orchestration.config import flatten

    variant = (base.get("sweep", {}).get("variants") or {}).get(values.get("variant"), {})
    return flatten(base) | flatten(variant) | values


def _paper_row(paper: dict | None, dataset: str, effective: dict[str, Any]) -> tuple[str | None, dict]:
    for row in (paper or {}).get("rows", []):
        if _matches(row.get("values", {}), effective) and dataset in row.get("results", {}):
            return row.get("label"), {k: tuple(v) for k, v in row["results"][dataset].items()}
    return None, {}
