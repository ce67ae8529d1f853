"""Hierarchical source separation (Manilow's dissertation, chapter 2): one mask per level of a leaf's path.

A query names a leaf of the source hierarchy (components/taxonomies/hierarchy-18.yaml); the model
outputs masks for the leaf, its family and its group (multi-level, L = 3) or for one of them
(single-level). Source-specific (SSS) models are trained for one target path; query-by-example
(QBE) models are conditioned on an audio query of the target leaf taken from another piece.

The hierarchy constraint `max` makes every coarser mask contain the finer ones: M_l = max(M'_l, M_{l-1})
from the leaf upwards, which is a cumulative maximum over the level axis. (The public code's loop
returns [M'1, M'1, max(M'1, M'2)]; this is the constraint as the thesis describes it.)
"""

from __future__ import annotations

from typing import Literal

import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from components.errors import PartitaError
from components.models.base import ModelConfig
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
        return self

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
