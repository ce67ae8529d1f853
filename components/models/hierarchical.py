"""Hierarchical source separation (Manilow's dissertation, chapter 2): one mask per level of a leaf's path.

A query names a leaf of the source hierarchy (components/taxonomies/hierarchy-18.yaml); the model
outputs masks for the leaf, its family and its group (multi-level, L = 3) or for one of them
(single-level). Source-specific (SSS) models are trained for one target path; query-by-example
(QBE) models are conditioned on an audio query of the target leaf taken from another piece.

The family (`HIERARCHICAL`) trains both on the chapter's examples, which it makes itself
(`example_maker`): every stem of a piece mixed, the targets the submixes of the path's nodes (each
stem joins the nodes above its hierarchy leaf, as the built set labels it), a segment kept when the
leaf and the stems outside its group are above min_dbfs and, for multi-level models, a sibling or
cousin stem is too. An SSS example targets the configured leaf's path; a QBE example targets the path
of any leaf salient in the segment and carries a query: a clip of that leaf from another piece of the
same split, drawn from a small pool of int16 clips made once per set and recipe and cached
(`query_pool`, `query_pools`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Literal

import numpy as np
import torch
from pydantic import Field, field_validator, model_validator
from torch import nn

from components.data.audio import read_audio
from components.data.manifest import read_manifest
from components.data.multitrack.featurize import ViewFeaturizer
from components.data.multitrack.fixed import write_npz
from components.data.multitrack.reader import Piece, pieces
from components.data.multitrack.render import FULL_SCALE
from components.data.multitrack.segments import SEGMENTINGS, SegmentConfig, Segments, segment
from components.data.multitrack.taxonomy import load_hierarchy
from components.data.multitrack.view import ViewConfig
from components.data.splits import files
from components.errors import PartitaError
from components.losses.separation import tpsa_loss
from components.models.base import Batch, ExampleMaker, ModelConfig, ModelFamily, ViewSpec
from components.models.masked_separation import SeparationScores, masked_waveforms
from components.models.masker import LOG_FLOOR, BLSTMStack, MaskHead, log_magnitude
from components.schema import StrictModel

LEVELS = ("leaf", "family", "group")  # the level axis of every mask tensor, finest first
SPLITS = ("train", "valid", "test")
EXAMPLE_RULES = 2  # bump when the same config would now make other examples (2: the accompaniment must be salient)
CLIPS_PER_PIECE = 2  # query clips of a leaf from one piece: the pool keeps many pieces' timbres, not one piece's


def hierarchy_constraint(masks: torch.Tensor, constraint: Literal["off", "max"]) -> torch.Tensor:
    """masks [B, L, F, T], level 0 the leaf -> the constrained masks (M_L >= ... >= M_1 everywhere when `max`)."""
    return torch.cummax(masks, dim=1).values if constraint == "max" else masks


class QueryConfig(StrictModel):
    hidden: int = Field(600, gt=0, description="query BLSTM units per direction")
    layers: int = Field(2, gt=0)
    dropout: float = Field(0.3, ge=0, lt=1, description="after the first layer (ch. 2)")
    embedding: int = Field(20, gt=0, description="embedding per time-frequency bin")
    floor_db: float = Field(-60.0, lt=0, description="the anchor averages query bins louder than this re the query's maximum")
    seconds: float | None = Field(
        None,
        gt=0,
        description="query clip length; None: the view's segment length (ch. 2 gives none; as long as an example, a query "
        "holds as much of the leaf as the target does, and fits any set whose pieces hold a segment)",
    )
    pool_per_leaf: int = Field(16, gt=0, description=f"query clips kept per leaf and split (at most {CLIPS_PER_PIECE} per piece), as int16: bounded memory whatever the set's size")
    leaves: list[str] | None = Field(
        None,
        min_length=1,
        description="the leaves queried, trained and scored (None: every leaf of the hierarchy, as ch. 2); a subset is a smaller conditional task",
    )


class LevelWeights(StrictModel):
    """Weight of each level's tPSA loss (the thesis: equal). A level a model does not separate is ignored."""

    leaf: float = Field(1.0, ge=0)
    family: float = Field(1.0, ge=0)
    group: float = Field(1.0, ge=0)


class DataReduction(StrictModel):
    """Table 2.5: remove a fraction of the training data, either only the leaf's targets (the parents' are kept and
    still trained) or whole examples. Which ones is fixed by the seed, the piece and the segment; validation and
    test examples are never removed."""

    fraction: float = Field(0.0, ge=0, lt=1)
    what: Literal["leaf", "all"] = Field("leaf", description="leaf: the leaf's target only (its loss is masked); all: whole examples")


def hierarchical_view() -> ViewConfig:
    """Ch. 2's segments: 10 s, hop 2.5 s, a target kept above -30 dBFS (the examples are the family's own: the view
    gives their cutting, the STFT and the stream's sizes)."""
    return ViewConfig(segment=SEGMENTINGS["hierarchical"])


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
    data_reduction: DataReduction = DataReduction()
    require_relative: bool = Field(True, description="multi-level examples need a sibling or cousin above min_dbfs too (ch. 2); off: the leaf alone (tiny sets)")
    query_file: str | None = Field(None, description="QBE apply: a recording of the instrument to separate (`partita apply --query`)")
    view: ViewConfig = Field(default_factory=hierarchical_view)

    @field_validator("hierarchy_constraint", mode="before")
    @classmethod
    def _yaml_off(cls, value):
        # YAML 1.1 reads a bare `off` (in a preset or `--set model.hierarchy_constraint=off`) as false
        return "off" if value is False else value

    @model_validator(mode="after")
    def _leaf_in_hierarchy(self) -> "HierarchicalConfig":
        try:
            leaves = load_hierarchy(self.hierarchy).leaves
        except PartitaError as err:
            raise ValueError(str(err)) from None
        if self.target_leaf not in leaves:
            raise ValueError(f"target_leaf {self.target_leaf!r} is not a leaf of {self.hierarchy}; use one of: {', '.join(leaves)}")
        unknown = sorted(set(self.query.leaves or ()) - set(leaves))
        if unknown:
            raise ValueError(f"query.leaves {unknown} are not leaves of {self.hierarchy}; use some of: {', '.join(leaves)}")
        if sum(getattr(self.level_weights, level) for level in self.level_names) <= 0:
            raise ValueError(f"the level weights of {', '.join(self.level_names)} are all 0, so nothing would be trained; give one a positive weight")
        if self.data_reduction.fraction and self.data_reduction.what == "leaf" and self.levels != "multi":
            raise ValueError("removing only the leaf's targets needs a multi-level model (its parents keep training); use data_reduction.what: all")
        if self.view.classes:
            raise ValueError("the hierarchical family mixes every stem of a piece and targets the submixes of the path's nodes; leave model.view.classes empty")
        return self

    @property
    def level_names(self) -> tuple[str, ...]:
        return LEVELS if self.levels == "multi" else (self.single_level,)

    @property
    def nodes(self) -> tuple[str, ...]:
        """The hierarchy node each mask of an SSS model separates, in mask order (leaf first)."""
        return self.path_nodes(self.target_leaf)

    def path_nodes(self, leaf: str) -> tuple[str, ...]:
        """The nodes of `leaf`'s path the model separates, in mask order (leaf first)."""
        path = dict(zip(LEVELS, load_hierarchy(self.hierarchy).path(leaf)))
        return tuple(path[level] for level in self.level_names)

    @property
    def query_seconds(self) -> float:
        return self.query.seconds or self.view.segment.seconds


def leaf_segments(piece: Piece, stem_leaves: list[str], leaf: str, config: HierarchicalConfig) -> Segments:
    """The piece's segments and what an example of `leaf` needs salient in each (level above min_dbfs, enough
    onsets): the leaf's submix, the stems outside its group (the accompaniment) and, for a multi-level model that
    `require_relative`, the stems under its group but not under it (a sibling or cousin: ch. 2's rule, so the
    coarser levels differ from the leaf).

    The accompaniment rule is ours: every Slakh mix the chapter separates has bass and drums, but a slakh-like
    segment can be all keys, guitars and strings (a madrigal), where the group is the mixture: its mixture SI-SDR
    is the metric's +100 dB cap, so any estimate scores about -100 dB SI-SDRi and a few such examples outweigh the
    rest of a mean (measured: 16 of 200 test examples moved the SSS group mean from +3.6 to -1.9 dB)."""
    hierarchy = load_hierarchy(config.hierarchy)
    own = np.isin(stem_leaves, hierarchy.leaves_under(leaf))
    group = np.isin(stem_leaves, hierarchy.leaves_under(hierarchy.path(leaf)[2]))
    required = [own, ~group] + ([group & ~own] if config.levels == "multi" and config.require_relative else [])
    notes = piece.notes
    onsets = [(notes.start[np.isin(notes.part, np.flatnonzero(stems))], notes.velocity[np.isin(notes.part, np.flatnonzero(stems))]) for stems in required]
    submixes = np.stack([piece.stems_pcm[stems].sum(0, dtype=np.int32) for stems in required])
    return segment(submixes, piece.sample_rate, onsets, config.view.segment, scale=1.0 / FULL_SCALE)


@dataclass(frozen=True)
class QueryPool:
    """One split's query clips: per leaf, int16 clips [n, samples] and the example_id of the piece each was cut from."""

    clips: dict[str, np.ndarray]
    pieces: dict[str, np.ndarray]

    def others(self, leaf: str, piece: int) -> np.ndarray:
        """Indices of the leaf's clips cut from pieces other than `piece`."""
        return np.flatnonzero(self.pieces.get(leaf, np.zeros(0, np.int64)) != piece)

    def draw(self, leaf: str, piece: int, rng: np.random.Generator) -> np.ndarray:
        """A float32 query of `leaf` from another piece (the leaf must have one: see `others`)."""
        return self.clips[leaf][rng.choice(self.others(leaf, piece))].astype(np.float32) * np.float32(1.0 / FULL_SCALE)


def query_pool(split_pieces: Iterable[Piece], config: HierarchicalConfig) -> QueryPool:
    """Query clips of every queried leaf (`query.leaves`) in a split's pieces: `query_seconds` long, cut without overlap, kept when the leaf's
    submix is above the view's min_dbfs, at most CLIPS_PER_PIECE per piece (spread over its salient clips) and
    `pool_per_leaf` per leaf. A piece's first clips are preferred to any piece's second, so the pool spans as many
    pieces (timbres) as it can; memory holds one piece and the kept clips."""
    cutting = SegmentConfig(seconds=config.query_seconds, hop_seconds=config.query_seconds, min_dbfs=config.view.segment.min_dbfs)
    limit = config.query.pool_per_leaf
    queried = set(config.query.leaves or load_hierarchy(config.hierarchy).leaves)  # a leaf without clips is no example's target
    kept: list[dict[str, list[tuple[int, np.ndarray]]]] = [{} for _ in range(CLIPS_PER_PIECE)]  # by rank in the piece: leaf -> (piece, clip)
    for piece in split_pieces:
        stem_leaves = np.asarray(piece.stem_leaves)
        for leaf in sorted(set(piece.stem_leaves) & queried):  # a leaf at a time: memory holds one submix
            submix = piece.stems_pcm[stem_leaves == leaf].sum(0, dtype=np.int32)
            no_onsets = [(np.zeros(0), np.zeros(0))]  # the dBFS rule only: queries need no onsets
            found = segment(submix[None], piece.sample_rate, no_onsets, cutting, scale=1.0 / FULL_SCALE)
            starts = found.starts[found.salient[0]]
            spread = np.unique(np.linspace(0, len(starts) - 1, min(CLIPS_PER_PIECE, len(starts))).round().astype(int))
            for rank, start in enumerate(starts[spread]):
                clips = kept[rank].setdefault(leaf, [])
                if len(clips) < limit:  # a leaf's submix can pass full scale where its stems' signs agree: clip, not wrap
                    clips.append((piece.example_id, np.clip(submix[start : start + found.length], -FULL_SCALE, FULL_SCALE - 1).astype(np.int16)))
    pool = {leaf: [clip for by_rank in kept for clip in by_rank.get(leaf, [])][:limit] for leaf in kept[0]}
    return QueryPool({leaf: np.stack([c for _, c in clips]) for leaf, clips in pool.items()}, {leaf: np.array([p for p, _ in clips], np.int64) for leaf, clips in pool.items()})


def query_pools(dataset_dir: Path, config: HierarchicalConfig, recipe: dict, cache_dir: Path | None) -> dict[str, QueryPool]:
    """Every split's `query_pool`, read back from `cache_dir` if a process made it before for this set's content and
    the maker's `recipe`: making them reads every piece (5.3 s on the default set, one thread beside a run; reading
    them back 0.2 s), and each trainer and Ray Data actor of a run needs them."""
    if cache_dir is None:
        return {split: query_pool(pieces(dataset_dir, split), config) for split in SPLITS}
    key = hashlib.sha256(json.dumps({"content": read_manifest(dataset_dir)["content_hash"], "recipe": recipe}, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / f"{Path(dataset_dir).name}-queries-{key}.npz"
    if not path.is_file():
        arrays = {}
        for split, pool in query_pools(dataset_dir, config, recipe, None).items():
            for k, leaf in enumerate(pool.clips):
                arrays |= {f"{split}_leaf_{k}": np.array(leaf), f"{split}_clips_{k}": pool.clips[leaf], f"{split}_pieces_{k}": pool.pieces[leaf]}
        write_npz(path, arrays)
    with np.load(path) as stored:
        leaves = {name: str(stored[name]) for name in stored.files if "_leaf_" in name}
        return {
            split: QueryPool(
                {leaf: stored[name.replace("_leaf_", "_clips_")] for name, leaf in leaves.items() if name.startswith(f"{split}_")},
                {leaf: stored[name.replace("_leaf_", "_pieces_")] for name, leaf in leaves.items() if name.startswith(f"{split}_")},
            )
            for split in SPLITS
        }


def hierarchy_examples(
    piece: Piece, stem_leaves: list[str], config: HierarchicalConfig, seed: int = 0, training: bool = False, draw: int = 0, queries: QueryPool | None = None
) -> list[dict[str, np.ndarray]]:
    """Every example of one piece, in segment order: the mixture of all its stems and the submixes [L, samples] of
    the path's nodes (the model's levels), in the segments where `leaf_segments` finds what the leaf needs salient.

    SSS (`queries` None): the configured leaf's path. QBE: up to `view.examples_per_segment` of the leaves salient in
    the segment that `queries` (the piece's split's pool) holds a clip of from another piece; each example adds that
    `query` and its `leaf` (index in the hierarchy's leaves). Which leaves and queries is drawn from (seed, piece,
    segment, draw) for `training` pieces and fixed for validation and test ones, so every seed and run scores the
    same examples. `training` also applies the config's data reduction: the removed examples are left out, or hold
    `leaf_known` 0 (every example holds `leaf_known` when the leaf's targets are reduced)."""
    hierarchy = load_hierarchy(config.hierarchy)
    if queries is None:
        leaves = [config.target_leaf]
    else:
        leaves = [leaf for leaf in hierarchy.leaves if leaf in stem_leaves and len(queries.others(leaf, piece.example_id))]
        if not leaves:
            return []
    found = [leaf_segments(piece, stem_leaves, leaf, config) for leaf in leaves]  # a leaf at a time: memory holds its submixes only
    pcm, scale = piece.stems_pcm.astype(np.int32), np.float32(1.0 / FULL_SCALE)  # sums on the stored integers: the mixture is exactly the stems' sum
    under = {node: np.isin(stem_leaves, hierarchy.leaves_under(node)) for leaf in leaves for node in config.path_nodes(leaf)}
    reduction = config.data_reduction
    examples = []
    starts, length = found[0].starts, found[0].length  # every leaf's cutting is the view's
    for k, start in enumerate(starts):
        candidates = [leaf for leaf, segments in zip(leaves, found) if segments.salient[:, k].all()]
        if not candidates:
            continue
        removed = training and np.random.default_rng([seed, piece.example_id, int(start)]).random() < reduction.fraction
        if removed and reduction.what == "all":
            continue
        window = slice(int(start), int(start) + length)
        mixture = pcm[:, window].sum(0) * scale
        if queries is not None:
            stream = [seed, piece.example_id, int(start), draw] if training else [piece.example_id, int(start)]
            picked = np.random.default_rng(stream).choice(len(candidates), min(config.view.examples_per_segment, len(candidates)), replace=False)
            candidates = [candidates[i] for i in sorted(picked)]
        for leaf in candidates:
            sources = np.stack([pcm[under[node], window].sum(0) for node in config.path_nodes(leaf)]) * scale
            example = {"mixture": mixture, "sources": sources, "piece": np.int64(piece.example_id), "start": np.int64(start)}
            if reduction.fraction and reduction.what == "leaf":
                example["leaf_known"] = np.float32(not removed)
            if queries is not None:
                index = hierarchy.leaves.index(leaf)
                example |= {"query": queries.draw(leaf, piece.example_id, np.random.default_rng([*stream, index])), "leaf": np.int64(index)}
            examples.append(example)
    return examples


def stem_leaves_by_piece(dataset_dir: Path, hierarchy: str) -> tuple[dict[int, list[str]], dict[int, str]]:
    """example_id -> the hierarchy leaf of each stem, over every split of a built set (a small column), and
    example_id -> its split. The view's reader does not load this column, so the family's maker reads it once."""
    import pyarrow.parquet as pq

    known = set(load_hierarchy(hierarchy).leaves)
    leaves: dict[int, list[str]] = {}
    splits: dict[int, str] = {}
    for split in SPLITS:
        for path in files(dataset_dir, split, "multitrack"):
            table = pq.read_table(path, columns=["example_id", "stem_leaves"])
            ids = table.column("example_id").to_pylist()
            leaves |= dict(zip(ids, table.column("stem_leaves").to_pylist()))
            splits |= dict.fromkeys(ids, split)
    unknown = sorted({leaf for row in leaves.values() for leaf in row} - known)
    if unknown:
        raise PartitaError(
            f"the stems of {Path(dataset_dir).name} are labelled with leaves {unknown[:3]} that {hierarchy} does not have",
            "set model.hierarchy to the hierarchy the set was built with (its recipe's hierarchy)",
        )
    return leaves, splits


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
    """The masker plus the featurizer of the family's examples (their level targets) and of the estimates."""

    def __init__(self, config: HierarchicalConfig, spec: ViewSpec):
        super().__init__()
        self.config, self.sample_rate = config, spec.sample_rate
        self.masker = HierarchicalMasker(config, config.view.bins)
        targets_view = config.view.model_copy(update={"targets": ["phase_sensitive"]})
        self.featurizer = ViewFeaturizer(targets_view, spec.sample_rate, keep_waveforms=True)
        weights = [getattr(config.level_weights, level) for level in config.level_names]
        self.register_buffer("level_weights", torch.tensor(weights) / sum(weights), persistent=False)

    def forward(self, mix_mag: torch.Tensor, query_mag: torch.Tensor | None = None) -> torch.Tensor:
        return self.masker(mix_mag, query_mag)

    def query_mag(self, query: torch.Tensor) -> torch.Tensor:
        """Query waveforms [B, samples] -> their magnitude [B, F, Tq], by the mixture's STFT."""
        return self.featurizer.stft(query.float()).abs()

    def levels(self, batch: Batch) -> Batch:
        """An unfeaturised batch (mixture, `sources` = the level submixes [B, L, samples], a QBE example's `query`)
        plus mix_mag, the levels' tPSA targets [B, L, F, T] and the query's `query_mag`."""
        if batch["sources"].shape[1] != len(self.config.level_names):  # masks and references would broadcast silently
            raise ValueError(f"the batch holds {batch['sources'].shape[1]} level submixes, the model separates {len(self.config.level_names)}")
        levels = self.featurizer({"mixture": batch["mixture"].float(), "sources": batch["sources"].float()})
        if "query" in batch:
            levels["query_mag"] = self.query_mag(batch["query"])
        return levels

    def level_loss(self, masks: torch.Tensor, levels: Batch, leaf_known: torch.Tensor | None = None) -> torch.Tensor:
        """tPSA per level, weighted (the weights sum to one); `leaf_known` [B] 0/1 leaves the removed leaf targets
        out of the leaf's term (Table 2.5), which averages over the examples that kept theirs."""
        masks, target = masks.float(), levels["target_psa"]
        per_level = [tpsa_loss(masks[:, [l]], levels["mix_mag"], target[:, [l]]) for l in range(masks.shape[1])]
        if leaf_known is not None:  # |k (M|X| - T)| = k |M|X| - T| for k in {0, 1}
            known = leaf_known.float().view(-1, 1, 1, 1)
            per_level[0] = tpsa_loss(masks[:, [0]] * known, levels["mix_mag"], target[:, [0]] * known) * len(known) / known.sum().clamp_min(1.0)
        return (self.level_weights * torch.stack(per_level)).sum()


class Hierarchical(ModelFamily):
    name = "hierarchical"
    config_class = HierarchicalConfig
    selection_metric = "si_sdri"
    selection_mode = "max"

    def view(self, config: HierarchicalConfig) -> ViewConfig:
        return config.view

    def example_maker(self, config: HierarchicalConfig, dataset_dir: Path, cache_dir: Path | None = None) -> ExampleMaker:
        """The chapter's examples of the set's pieces; for QBE, with queries from a pool per split, made once per set
        and recipe (kept in `cache_dir`)."""
        leaves, splits = stem_leaves_by_piece(dataset_dir, config.hierarchy)
        fields = {"hierarchy", "target_leaf", "levels", "single_level", "require_relative", "data_reduction"}
        qbe = config.conditioning == "qbe"
        if qbe:  # every leaf a piece plays is a target: the SSS target leaf decides nothing
            fields = fields - {"target_leaf"} | {"conditioning"}
        recipe = {"family": self.name, "segment": config.view.segment.model_dump(mode="json"), "rules": EXAMPLE_RULES} | config.model_dump(mode="json", include=fields)
        pools = None
        if qbe:
            pool = {"seconds": config.query_seconds, "pool_per_leaf": config.query.pool_per_leaf, "clips_per_piece": CLIPS_PER_PIECE}
            if config.query.leaves is not None:  # keyed only when set: the pools of every leaf keep their cache
                pool["leaves"] = sorted(config.query.leaves)
            recipe |= {"query": pool, "examples_per_segment": config.view.examples_per_segment}
            pools = query_pools(dataset_dir, config, recipe, cache_dir)

        def make(piece: Piece, seed: int, draw: int) -> list[dict[str, np.ndarray]]:
            split = splits[piece.example_id]
            queries = pools[split] if pools is not None else None
            return hierarchy_examples(piece, leaves[piece.example_id], config, seed, training=split == "train", draw=draw, queries=queries)

        return ExampleMaker(make, recipe)

    def build(self, config: HierarchicalConfig, data: ViewSpec) -> nn.Module:
        return HierarchicalModel(config, data)

    def loss(self, model: HierarchicalModel, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        core = getattr(model, "module", model)  # under DDP the forward goes through the wrapper, the rest to the model
        levels = core.levels(batch)
        loss = core.level_loss(model(levels["mix_mag"], levels.get("query_mag")), levels, batch.get("leaf_known"))
        return loss, {"loss": float(loss.detach())}

    def evaluate(self, model: HierarchicalModel, batches: Iterable[Batch]) -> dict[str, float]:
        """tPSA and SI-SDR(i) per level on the fixed examples; `si_sdri` pools every level's examples (Table 2.4's All)."""
        total, count, scores = 0.0, 0, SeparationScores()
        for batch in batches:
            levels = model.levels(batch)
            spec = model.featurizer.stft(levels["mixture"])
            masks = model(spec.abs(), levels.get("query_mag"))
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
            levels = model.levels({key: batch[key][:1].to(device) for key in ("mixture", "sources", "query") if key in batch})
            masks = model(levels["mix_mag"], levels.get("query_mag"))[0].float().cpu()
        config = model.config
        nodes = config.path_nodes(load_hierarchy(config.hierarchy).leaves[int(batch["leaf"][0])]) if "leaf" in batch else config.nodes
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
        for level, node in enumerate(nodes):
            axes[1 + level, 0].imshow(masks[level].numpy(), origin="lower", aspect="auto", vmin=0, vmax=1, cmap="viridis")
            axes[1 + level, 0].set_title(f"{config.level_names[level]} ({node}): mask", fontsize=8)
            for ax, image, title in ((axes[1 + level, 1], masks[level] * mix, "estimate (dB)"), (axes[1 + level, 2], reference[level], "reference submix (dB)")):
                ax.imshow(db(image), origin="lower", aspect="auto", vmin=top - 80, vmax=top, cmap="magma")
                ax.set_title(title, fontsize=8)
        return fig

    def apply(self, model: HierarchicalModel, audio: torch.Tensor, data: ViewSpec) -> dict[str, np.ndarray]:
        """One WAV per level: SSS, named after the target path's nodes; QBE, separated as the query (`model.query_file`,
        `partita apply --query`) names, after the levels (leaf, family, group): the query, not the run, picks the leaf."""
        config = model.config
        if config.conditioning == "sss":
            if config.query_file:
                raise PartitaError(
                    f"this run is source-specific: it separates {config.target_leaf!r} and its parents, and takes no query",
                    "drop --query; it is for runs trained with model.conditioning=qbe",
                )
            names, query_mag = config.nodes, None
        else:
            if not config.query_file:
                raise PartitaError("a query-by-example run separates the instrument a query recording names, and none was given", "pass --query QUERY.wav, a recording of that instrument")
            names, query_mag = config.level_names, model.query_mag(read_audio(Path(config.query_file), data.sample_rate).to(audio.device).unsqueeze(0))
        spec = model.featurizer.stft(audio.float().unsqueeze(0))
        estimates = masked_waveforms(model.featurizer, model(spec.abs(), query_mag), spec, audio.shape[-1])[0].cpu().numpy()
        return {f"{name.replace(' ', '_')}.wav": estimate for name, estimate in zip(names, estimates)}


HIERARCHICAL = Hierarchical()
