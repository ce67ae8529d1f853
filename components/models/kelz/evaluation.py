"""Kelz and Widmer's evaluation: decompose S, T and T' of every split, threshold per pitch, and tabulate.

Inputs per split: S, each rendering by a non-canonical piano; T, the canonical rendering of
each of the split's pieces (the oracle); T', each S denoised by the U-Net. Thresholds are
fitted per input on its train + valid decompositions pooled and applied to every split.
The table holds the medians over pieces of framewise P, R and F1, each median taken on its
own (as the paper does), per split and input; beside it, per-piece MSE and SSIM between
V_T' and V_T on log(1 + mel), the scale the denoiser is trained on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from components.data.pianos.reader import renderings
from components.data.pianos.snippets import CANONICAL
from components.metrics.similarity import ssim
from components.models.kelz.demixing import DemixConfig, decompose, fit_thresholds, piece_scores

INPUTS = ("S", "T", "T'")
SPLITS = ("train", "valid", "test")
FIT_SPLITS = ("train", "valid")


@dataclass
class Item:
    name: str  # piece and piano
    spectrogram: np.ndarray  # [bins, frames] linear-magnitude mel
    roll: np.ndarray  # [88, frames], > 0 where a note sounds


@dataclass
class Inputs:
    """inputs[input][split] -> items, and per-piece V_T' vs V_T quality[split] -> [(mse, ssim)]."""

    items: dict[str, dict[str, list[Item]]]
    quality: dict[str, list[tuple[float, float]]] = field(default_factory=dict)


def collect_inputs(path: Path, scheme: str, denoise: Callable[[np.ndarray], np.ndarray] | None) -> Inputs:
    """S, T and (with a denoiser) T' of every split present in the set."""
    canonical = {r.piece_id: r for r in renderings(path, CANONICAL)}
    items: dict[str, dict[str, list[Item]]] = {name: {} for name in INPUTS}
    quality: dict[str, list[tuple[float, float]]] = {}
    for split in SPLITS:
        sources = list(renderings(path, split, scheme))
        if not sources:
            continue
        items["S"][split] = [Item(f"{r.piece}@{r.piano}", r.mel, r.roll) for r in sources]
        pieces = sorted({r.piece_id for r in sources})
        items["T"][split] = [Item(canonical[p].piece, canonical[p].mel, canonical[p].roll) for p in pieces]
        if denoise is not None:
            items["T'"][split], quality[split] = [], []
            for r in sources:
                denoised, target = denoise(r.mel), canonical[r.piece_id].mel
                items["T'"][split].append(Item(f"{r.piece}@{r.piano}", denoised, r.roll))
                estimate, reference = torch.log1p(torch.from_numpy(denoised)), torch.log1p(torch.from_numpy(target))
                quality[split].append((float((estimate - reference).square().mean()), ssim(estimate, reference)))
    return Inputs({name: splits for name, splits in items.items() if splits}, quality)


def fit_input_thresholds(decompositions: dict[str, list[tuple[np.ndarray, np.ndarray]]], candidates: int) -> np.ndarray:
    """Per-pitch thresholds of one input from its train and valid (activations, roll) pairs only."""
    fitted = [pair for split in FIT_SPLITS for pair in decompositions.get(split, [])]
    return fit_thresholds([a for a, _ in fitted], [r for _, r in fitted], candidates)


@dataclass
class TwoStageResult:
    rows: list[dict]  # split, input, pieces, precision, recall, f1 (medians over pieces)
    per_piece: dict[tuple[str, str], list[tuple[str, float, float, float]]]  # (input, split) -> (name, P, R, F1)
    activations: dict[tuple[str, str], list[np.ndarray]]  # (input, split) -> per item
    thresholds: dict[str, np.ndarray]

    def metrics(self) -> dict[str, float]:
        """Flat names for logging, e.g. "test/T_prime/f1" (`rows_from_metrics` reverses it)."""
        return {metric_key(r["split"], r["input"], k): r[k] for r in self.rows for k in ROW_FIELDS}


ROW_FIELDS = ("pieces", "precision", "recall", "f1")
# MLflow refuses an apostrophe in a metric name: T' is logged as T_prime
METRIC_INPUT = {name: name.replace("'", "_prime") for name in INPUTS}


def metric_key(split: str, input_name: str, field: str) -> str:
    return f"{split}/{METRIC_INPUT[input_name]}/{field}"


def rows_from_metrics(metrics: dict[str, float]) -> list[dict]:
    inputs = {logged: name for name, logged in METRIC_INPUT.items()}
    rows: dict[tuple[str, str], dict] = {}
    for key, value in metrics.items():
        parts = key.split("/")
        if len(parts) == 3 and parts[0] in SPLITS and parts[1] in inputs and parts[2] in ROW_FIELDS:
            name = inputs[parts[1]]
            rows.setdefault((parts[0], name), {"split": parts[0], "input": name})[parts[2]] = value
    return list(rows.values())


def evaluate_inputs(inputs: Inputs, dictionary: np.ndarray, config: DemixConfig, candidates: int, device: str = "cpu") -> TwoStageResult:
    rows, per_piece, activations, thresholds = [], {}, {}, {}
    for name, splits in inputs.items.items():
        decompositions = {
            split: list(zip(decompose(dictionary, [i.spectrogram for i in items], config, device), [i.roll for i in items]))
            for split, items in splits.items()
        }
        thresholds[name] = fit_input_thresholds(decompositions, candidates)
        for split, pairs in decompositions.items():
            scores = [piece_scores(a, r, thresholds[name]) for a, r in pairs]
            per_piece[name, split] = [(item.name, *s) for item, s in zip(splits[split], scores)]
            activations[name, split] = [a for a, _ in pairs]
            medians = np.median(np.array(scores), axis=0)
            rows.append({"split": split, "input": name, "pieces": len(pairs), "precision": float(medians[0]), "recall": float(medians[1]), "f1": float(medians[2])})
    return TwoStageResult(rows, per_piece, activations, thresholds)


def table_markdown(rows: list[dict], paper: dict | None, quality: dict[str, list[tuple[float, float]]], scale: str) -> str:
    """The paper's table: median P / R / F1 per split and input (`TwoStageResult.rows`), the paper's F1 beside ours."""
    lines = [f"Framewise scores, medians over pieces ({scale})", "", "| split | input | pieces | P | R | F1 | F1 (paper) |", "|---|---|---|---|---|---|---|"]
    for row in sorted(rows, key=lambda r: (SPLITS.index(r["split"]), INPUTS.index(r["input"]))):
        theirs = (paper or {}).get(row["split"], {}).get(row["input"])
        lines.append(
            f"| {row['split']} | {row['input']} | {int(row['pieces'])} | {row['precision']:.3f} | {row['recall']:.3f} | {row['f1']:.3f} | {'' if theirs is None else f'{theirs:.3f}'} |"
        )
    if quality:
        lines += ["", "V_T' against V_T per piece, log(1 + mel): median (IQR)", "", "| split | MSE | SSIM |", "|---|---|---|"]
        for split in SPLITS:
            if split in quality:
                values = np.array(quality[split])
                cells = [f"{np.median(v):.4f} ({np.quantile(v, 0.25):.4f}-{np.quantile(v, 0.75):.4f})" for v in values.T]
                lines.append(f"| {split} | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


def excerpt_figure(inputs: Inputs, result: TwoStageResult, frames: int = 400):
    """V_S, V_T', V_T of the first test rendering and the activations of S and T' beside the true roll."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    split = "test" if "test" in inputs.items["S"] else next(iter(inputs.items["S"]))
    source = inputs.items["S"][split][0]
    window = slice(0, min(frames, source.spectrogram.shape[1]))
    panels = [("V_S", np.log1p(source.spectrogram[:, window]))]
    if "T'" in inputs.items:
        panels.append(("V_T' (denoised)", np.log1p(inputs.items["T'"][split][0].spectrogram[:, window])))
    name = source.name.split("@")[0]
    target = next((i for i in inputs.items["T"][split] if i.name == name), None)
    if target is not None:
        panels.append(("V_T (canonical)", np.log1p(target.spectrogram[:, window])))
    panels += [(f"activations of {k}", result.activations[k, split][0][:, window]) for k in ("S", "T'") if (k, split) in result.activations]
    panels.append(("true frame roll", (source.roll[:, window] > 0).astype(float)))
    figure, axes = plt.subplots(len(panels), 1, figsize=(10, 2.2 * len(panels)), sharex=True)
    for axis, (title, image) in zip(axes, panels):
        axis.imshow(image, origin="lower", aspect="auto", cmap="magma", interpolation="nearest")
        axis.set_title(f"{title}: {source.name}", fontsize=9)
    axes[-1].set_xlabel("frame")
    figure.tight_layout()
    return figure
