"""Hierarchical source separation (Manilow's dissertation, chapter 2): one mask per level of a leaf's path.

A query names a leaf of the source hierarchy (components/taxonomies/hierarchy-18.yaml); the model
outputs masks for the leaf, its family and its group (multi-level, L = 3) or for one of them
(single-level). Source-specific (SSS) models are trained for one target path; query-by-example
(QBE) models are conditioned on an audio query of the target leaf taken from another piece.

The family (`HIERARCHICAL`) trains SSS models on a multi-track view whose named classes each lie
wholly inside or wholly outside every node of the target path: a level's target is the sum of the
view's sources under its node, the mixture the sum of them all. (The thesis mixes every stem of a
piece and needs no class list; the view mixes a few chosen stems, so the classes stand in for the
submixes. QBE needs a query from another piece, which no view supplies yet: the family refuses it.)

The hierarchy constraint `max` makes every coarser mask contain the finer ones: M_l = max(M'_l, M_{l-1})
from the leaf upwards, which is a cumulative maximum over the level axis. (The public code's loop
returns [M'1, M'1, max(M'1, M'2)]; this is the constraint as the thesis describes it.)
"""

from __future__ import annotations

from functools import cached_property
from typing import Iterable, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.segments import SEGMENTINGS
from components.data.multitrack.view import ViewConfig
from components.errors import PartitaError
from components.losses.separation import tpsa_loss
from components.models.base import Batch, ModelConfig, ModelFamily, ViewSpec
from components.models.masked_separation import SeparationScores, masked_waveforms
from components.models.masker import LOG_FLOOR, BLSTMStack, MaskHead, log_magnitude
from components.schema import StrictModel

LEVELS = ("leaf", "family", "group")  # the level axis of every mask tensor, finest first


def hierarchy_constraint(masks: torch.Tensor, constraint: Literal["off", "max"]) -> torch.Tensor:
    """masks [B, L, F, T], level 0 the leaf -> the constrained masks (M_L >= ... >= M_1 everywhere when `max`)."""
    return torch.cummax(masks, dim=1).values if constraint == "max" else masks


class QueryConfig(StrictModel):
    hidden: int = Field(600, gt=0, description="query BLSTM units per direction")
    layers: int = Field(2, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1, description="after the first layer (ch. 2)")
    embedding: int = Field(20, gt=0, description="embedding per time-frequency bin")
    floor_db: float = Field(-60.0, lt=0, description="the anchor averages query bins louder than this re the query's maximum")


class LevelWeights(StrictModel):
    """Weight of each level's tPSA loss (the thesis: equal). A level a model does not separate is ignored."""

    leaf: float = Field(1.0, ge=0)
    family: float = Field(1.0, ge=0)
    group: float = Field(1.0, ge=0)


def hierarchical_view() -> ViewConfig:
    """Ch. 2's segments (10 s, hop 2.5 s, a target kept above -30 dBFS) over Table 2.1's path (clean guitars /
    guitars / strings and keys): an acoustic guitar (the leaf), a harp (a sibling: guitars), a piano (a cousin:
    strings and keys) and a bass (outside the group), each as its stems' waveforms (the level targets are their sums)."""
    return ViewConfig(segment=SEGMENTINGS["hierarchical"], sources=4, classes=["Acoustic Guitar", "Harp", "Piano", "Bass"], targets=["waveform"])


class HierarchicalConfig(ModelConfig):
    family: Literal["hierarchical"] = "hierarchical"
    conditioning: Literal["sss", "qbe"] = Field("sss", description="source-specific (one target path) or query-by-example")
    levels: Literal["single", "multi"] = Field("multi", description="multi: one mask per level (leaf, family, group); single: one level")
    single_level: Literal[LEVELS] = Field("leaf", description="the level a single-level network separates (ch. 2 trains one network per level)")
    hierarchy_constraint: Literal["off", "max"] = Field("off", description="max: coarser masks contain finer ones (a cumulative max from the leaf up)")
    hierarchy: str = Field("hierarchy-18", description="source hierarchy: bundled name or YAML path (the data set's own)")
    target_leaf: str = Field("clean guitars", description="SSS target path from this leaf (Table 2.1: clean guitars, guitars, strings and keys)")
    hidden: int = Field(600, gt=0, description="BLSTM units per direction")
    layers: int = Field(4, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1)
    query: QueryConfig = QueryConfig()
    level_weights: LevelWeights = LevelWeights()
    class_taxonomy: str = Field("jointist-39", description="the data set's class taxonomy, which names view.classes")
    view: ViewConfig = Field(default_factory=hierarchical_view)

    @field_validator("hierarchy_constraint", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML 1.1 reads a bare `off` (in a preset or `--set model.hierarchy_constraint=off`) as false
        return "off" if value is False else value

    @model_validator(mode="after")
    def _leaf_in_hierarchy(self) -> "HierarchicalConfig":
        from components.data.multitrack.taxonomy import load_hierarchy  # reads the YAML: only when validating

        try:
            leaves = load_hierarchy(self.hierarchy).leaves
        except PartitaError as err:
            raise ValueError(str(err)) from None
        if self.target_leaf not in leaves:
            raise ValueError(f"target_leaf {self.target_leaf!r} is not a leaf of {self.hierarchy}; use one of: {', '.join(leaves)}")
        if sum(getattr(self.level_weights, level) for level in self.level_names) <= 0:
            raise ValueError(f"the level weights of {', '.join(self.level_names)} are all 0, so nothing would be trained; give one a positive weight")
        if self.view.targets != ["waveform"]:
            raise ValueError("the hierarchical family sums the stems' waveforms into its level targets; set model.view.targets: [waveform]")
        self.membership  # refuses classes that straddle a node of the path
        return self

    @cached_property
    def nodes(self) -> tuple[str, ...]:
        """The hierarchy node each mask separates, in mask order (leaf first)."""
        from components.data.multitrack.taxonomy import load_hierarchy

        path = dict(zip(LEVELS, load_hierarchy(self.hierarchy).path(self.target_leaf)))
        return tuple(path[level] for level in self.level_names)

    @cached_property
    def membership(self) -> tuple[tuple[bool, ...], ...]:
        """[level][source]: whether the view's class of that source lies under the level's node.

        Every class must lie wholly inside or wholly outside each node (a class split across a node has no
        level), every level needs a source under it, and some source must lie outside the coarsest node
        (else its mask is all ones)."""
        from components.data.multitrack.taxonomy import load_classes, load_hierarchy

        hierarchy, taxonomy = load_hierarchy(self.hierarchy), load_classes(self.class_taxonomy)
        if not self.view.classes:
            raise ValueError("the hierarchical family needs model.view.classes: the class of each source decides which level targets it joins")
        rows = []
        for node in self.nodes:
            under = {p for p, leaf in enumerate(hierarchy.program_leaf) if hierarchy.leaves[leaf] in hierarchy.leaves_under(node)}
            row = []
            for name in self.view.classes:
                programs = {p for p, c in enumerate(taxonomy.program_class) if c == taxonomy.index(name)}
                if not (programs <= under or programs.isdisjoint(under)):
                    raise ValueError(f"view class {name!r} lies partly under {node!r} (programs {sorted(programs & under)}) and partly outside; choose classes wholly inside or outside each node of {self.target_leaf!r}'s path")
                row.append(programs <= under)
            if not any(row):
                raise ValueError(f"no view class lies under {node!r}, so its target would be silent; add one of its classes to model.view.classes")
            rows.append(tuple(row))
        if all(rows[-1]):
            raise ValueError(f"every view class lies under {self.nodes[-1]!r}, so its mask is trivially all ones; add a class outside it to model.view.classes")
        return tuple(rows)

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVELS if self.levels == "multi" else (self.single_level,)


class QueryNet(nn.Module):
    """Query magnitude [B, F, Tq] -> anchor [B, D]: an embedding per bin, averaged over the query's loud bins."""

    def __init__(self, bins: int, config: QueryConfig):
        super().__init__()
        self.floor_db, self.embedding = config.floor_db, config.embedding
        self.stack = BLSTMStack(bins, config.hidden, config.layers, config.dropout)
        self.linear = nn.Linear(2 * config.hidden, bins * config.embedding)  # linear: no activation (ch. 2)

    def forward(self, query_mag: torch.Tensor) -> torch.Tensor:
        b, f, t = query_mag.shape
        embedding = self.linear(self.stack(log_magnitude(query_mag))).view(b, t, f, self.embedding)
        db = 20.0 * torch.log10(query_mag.clamp_min(LOG_FLOOR)).transpose(1, 2)  # [B, T, F]
        loud = (db > db.amax(dim=(1, 2), keepdim=True) + self.floor_db).to(embedding.dtype).unsqueeze(-1)
        return (embedding * loud).sum((1, 2)) / loud.sum((1, 2)).clamp_min(1.0)


class HierarchicalMasker(nn.Module):
    """Mixture magnitude [B, F, T] (and a query [B, F, Tq] for QBE) -> masks [B, L, F, T], leaf first, sigmoid."""

    def __init__(self, config: HierarchicalConfig, bins: int):
        super().__init__()
        self.constraint = config.hierarchy_constraint
        self.query = QueryNet(bins, config.query) if config.conditioning == "qbe" else None
        inputs = bins + (config.query.embedding if self.query is not None else 0)
        self.stack = BLSTMStack(inputs, config.hidden, config.layers, config.dropout)
        self.head = MaskHead(2 * config.hidden, bins, len(config.level_names), "sigmoid")

    def forward(self, mix_mag: torch.Tensor, query_mag: torch.Tensor | None = None) -> torch.Tensor:
        frames = log_magnitude(mix_mag)
        if self.query is not None:
            if query_mag is None:
                raise PartitaError("a query-by-example model was run without a query", "pass a query example of the target leaf (--query QUERY.wav)")
            anchor = self.query(query_mag)  # conditions every mixture frame
            frames = torch.cat([frames, anchor.unsqueeze(1).expand(-1, frames.shape[1], -1)], dim=-1)
        return hierarchy_constraint(self.head(self.stack(frames)), self.constraint)


class HierarchicalModel(nn.Module):
    """The masker plus what turns the view's sources into level targets and masks into waveforms."""

    def __init__(self, config: HierarchicalConfig, spec: ViewSpec):
        super().__init__()
        self.config, self.sample_rate = config, spec.sample_rate
        self.masker = HierarchicalMasker(config, config.view.bins)
        self.register_buffer("membership", torch.tensor(config.membership, dtype=torch.float32), persistent=False)
        levels_view = config.view.model_copy(update={"targets": ["phase_sensitive"]})
        self.featurizer = ViewFeaturizer(levels_view, spec.sample_rate, keep_waveforms=True)
        weights = [getattr(config.level_weights, level) for level in config.level_names]
        self.register_buffer("level_weights", torch.tensor(weights) / sum(weights), persistent=False)

    def forward(self, mix_mag: torch.Tensor) -> torch.Tensor:
        return self.masker(mix_mag)

    def levels(self, batch: Batch) -> Batch:
        """mixture, `sources` = the level submixes [B, L, samples], mix_mag and their tPSA targets [B, L, F, T]."""
        submixes = torch.einsum("ls,bsn->bln", self.membership, batch["sources"].float())
        return self.featurizer({"mixture": batch["mixture"].float(), "sources": submixes})

    def level_loss(self, masks: torch.Tensor, levels: Batch) -> torch.Tensor:
        """tPSA per level, weighted (the weights sum to one)."""
        per_level = torch.stack([tpsa_loss(masks[:, [l]].float(), levels["mix_mag"], levels["target_psa"][:, [l]]) for l in range(masks.shape[1])])
        return (self.level_weights * per_level).sum()


class Hierarchical(ModelFamily):
    name = "hierarchical"
    config_class = HierarchicalConfig
    selection_metric = "si_sdri"
    selection_mode = "max"

    def view(self, config: HierarchicalConfig) -> ViewConfig:
        if config.conditioning == "qbe":
            raise PartitaError(
                "query-by-example training needs a query segment of the target leaf from another piece, which no multi-track view supplies yet",
                "train model.conditioning=sss (QBE waits on the view's query support, issue 13)",
            )
        return config.view

    def build(self, config: HierarchicalConfig, data: ViewSpec) -> nn.Module:
        return HierarchicalModel(config, data)

    def loss(self, model: HierarchicalModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        core = getattr(model, "module", model)  # under DDP the forward goes through the wrapper, the rest to the model
        levels = core.levels(batch)
        loss = core.level_loss(model(levels["mix_mag"]), levels)
        return loss, {"loss": float(loss.detach())}

    def evaluate(self, model: HierarchicalModel, batches: Iterable[Batch]) -> dict[str, float]:
        """tPSA and SI-SDR(i) per level on the fixed examples; `si_sdri` pools every level's examples (Table 2.4's All)."""
        total, count, scores = 0.0, 0, SeparationScores()
        for batch in batches:
            levels = model.levels(batch)
            spec = model.featurizer.stft(levels["mixture"])
            masks = model(spec.abs())
            total += float(model.level_loss(masks, levels)) * len(masks)
            count += len(masks)
            scores.add(masked_waveforms(model.featurizer, masks, spec, levels["mixture"].shape[-1]), levels["mixture"], levels["sources"])
        metrics = {"loss": total / count} | scores.means()
        for level, name in enumerate(model.config.level_names):
            metrics |= {f"{kind}_{name}": float(np.nanmean(scores[kind][:, level])) for kind in scores.NAMES}
        return metrics

    def figure(self, model: HierarchicalModel, batch: Batch):
        """For the first example: the mixture, then per level its mask and the masked mixture beside the reference submix (dB)."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        device = next(model.parameters()).device
        with torch.no_grad():
            levels = model.levels({key: batch[key][:1].to(device) for key in ("mixture", "sources")})
            masks = model(levels["mix_mag"])[0].float().cpu()
        mix = levels["mix_mag"][0].float().cpu()
        reference = model.featurizer.stft(levels["sources"][0]).abs().cpu()

        def db(mag: torch.Tensor) -> np.ndarray:
            return (20 * torch.log10(mag.clamp_min(1e-6))).numpy()

        top = float(db(mix).max())
        fig = Figure(figsize=(9.0, 1.8 * (1 + len(masks))), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(1 + len(masks), 3, squeeze=False)
        for ax in axes.ravel():
            ax.set_axis_off()
        axes[0, 0].imshow(db(mix), origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma")
        axes[0, 0].set_title("mixture (dB)", fontsize=8)
        for level, node in enumerate(model.config.nodes):
            axes[1 + level, 0].imshow(masks[level].numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
            axes[1 + level, 0].set_title(f"{model.config.level_names[level]} ({node}): mask", fontsize=8)
            for ax, image, title in ((axes[1 + level, 1], masks[level] * mix, "estimate (dB)"), (axes[1 + level, 2], reference[level], "reference submix (dB)")):
                ax.imshow(db(image), origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma")
                ax.set_title(title, fontsize=8)
        return fig

    def apply(self, model: HierarchicalModel, audio: torch.Tensor, data: ViewSpec) -> dict[str, np.ndarray]:
        """One WAV per node of the target path (leaf, family, group), named after the node."""
        spec = model.featurizer.stft(audio.float().unsqueeze(0))
        estimates = masked_waveforms(model.featurizer, model(spec.abs()), spec, audio.shape[-1])[0].cpu().numpy()
        return {f"{node.replace(' ', '_')}.wav": estimate for node, estimate in zip(model.config.nodes, estimates)}


HIERARCHICAL = Hierarchical()
