"""MusicSlots: slot attention that decomposes a chord spectrogram into note spectrograms.

CNN encoder with a soft positional embedding -> slot attention (Locatello et al.
2020) -> a spatial broadcast decoder per slot -> the slots' powers composed into
the chord (the paper's eq. 1). Trained unsupervised on the dB-domain MSE of the
reconstruction; selected on validation mIoU. Defaults are the paper's final
model (Tables 6-7, Table 15's last row: stride (1, 2), implicit differentiation,
no alpha masks).
"""

from __future__ import annotations

import math
from typing import Iterable, Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import Field, PositiveInt
from torch import nn

from components.data.features import FeatureConfig
from components.errors import PartitaError
from components.metrics.slots import match_notes
from components.models.autoencoders import Kernel, LatentDecoder, conv_output_size, conv_stack, deconv_stack, max_doublings, model_device, upsampled_size
from components.models.base import Batch, DataSpec, ModelConfig, ModelFamily, Representation

MASK_DB = FeatureConfig().mask_db  # the data's absolute mask level, for mIoU
AMIN_DB = -100.0  # 10 log10(amin = 1e-10), the floor of amplitude_to_DB
DB_PER_LN = 10.0 / math.log(10.0)  # 10 log10(p) = DB_PER_LN * ln(p)


class MusicSlotsConfig(ModelConfig):
    family: Literal["musicslots"] = "musicslots"
    # encoder (Table 6)
    encoder_channels: int = Field(128, gt=0)
    encoder_layers: int = Field(4, gt=0)
    encoder_kernel: Kernel = 5
    encoder_stride: tuple[PositiveInt, PositiveInt] = Field((1, 2), description="(mel, frame) stride of every encoder conv; the 'Default' ablation uses (1, 1)")
    token_size: int = Field(128, gt=0, description="width of the per-token Linear-ReLU-Linear after the encoder")
    encoder_init: Literal["torch", "he"] = Field(
        "torch",
        description="the encoder convs' weights: PyTorch's default (the authors'), or He-normal for ReLU with zero biases (ours), "
        "which keeps the chord's variation through the stack where the default shrinks it about 2.5x per layer",
    )
    # slot attention
    num_slots: int = Field(7, gt=0)
    iters: int = Field(3, gt=0)
    slot_size: int = Field(128, gt=0)
    attention_size: int = Field(128, gt=0, description="query/key/value projection size")
    mlp_hidden: int = Field(128, gt=0, description="hidden layer of the residual slot MLP")
    epsilon: float = Field(1e-8, gt=0, description="added to attention weights before the mean over inputs")
    implicit: bool = Field(True, description="implicit differentiation: gradient through the final iteration only")
    attention_logits: Literal["scaled", "unscaled"] = Field("scaled", description="q.k / sqrt(attention_size) (Locatello et al.) or q.k (the authors' code)")
    # decoder (Table 7)
    decoder_grid: tuple[PositiveInt, PositiveInt] = Field((8, 2), description="(mel, frame) size each slot is broadcast to")
    decoder_upsampling: int = Field(4, ge=0, description="stride-2 transposed convs, each doubling both axes")
    decoder_channels: int = Field(128, gt=0)
    decoder_kernel: Kernel = 5
    decoder_input: Literal["broadcast", "linear"] = Field(
        "broadcast",
        description="how a slot reaches the decoder's grid: tiled over it plus a learned position embedding (the paper), "
        "or a Linear map to decoder_channels per grid cell, position-specific weights as the AE's decoder (ours)",
    )
    # the networks' units: the encoder sees (dB - db_offset) / db_scale and the decoder's
    # output y means db_offset + db_scale * y dB. The paper's are raw dB (0, 1).
    db_offset: float = Field(0.0, description="dB level the encoder's input is centred on and the decoder's output starts from")
    db_scale: float = Field(1.0, gt=0, description="dB per unit of the encoder's input and the decoder's output")
    # composition (eq. 1)
    mask_norm: Literal["softmax", "sigmoid", "none"] = Field("none", description="alpha masks normalised over slots, squashed per slot, or absent")
    top_db: float = Field(80.0, gt=0, description="floor of the composed dB spectrogram under its maximum, as the input's")


class SoftPositionEmbedding(nn.Module):
    """Adds Linear(4, size) of each cell's distances to the four edges (linspace 0..1)."""

    def __init__(self, size: int, height: int, width: int):
        super().__init__()
        rows, cols = torch.meshgrid(torch.linspace(0, 1, height), torch.linspace(0, 1, width), indexing="ij")
        self.register_buffer("grid", torch.stack([rows, cols, 1 - rows, 1 - cols], -1), persistent=False)
        self.proj = nn.Linear(4, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [..., height, width, size], channels last."""
        return x + self.proj(self.grid)


class Encoder(nn.Module):
    """[B, 1, F, T] -> [B, tokens, token_size]."""

    def __init__(self, config: MusicSlotsConfig, data: DataSpec):
        super().__init__()
        self.convs = conv_stack(data.input_shape[0], config.encoder_channels, config.encoder_layers, config.encoder_kernel, config.encoder_stride)
        if config.encoder_init == "he":
            for conv in self.convs:
                if isinstance(conv, nn.Conv2d):
                    nn.init.kaiming_normal_(conv.weight, nonlinearity="relu")
                    nn.init.zeros_(conv.bias)
        grid = conv_output_size(data.input_shape[1:], config.encoder_layers, config.encoder_stride)
        self.pos = SoftPositionEmbedding(config.encoder_channels, *grid)
        self.norm = nn.LayerNorm(config.encoder_channels)
        self.mlp = nn.Sequential(
            nn.Linear(config.encoder_channels, config.token_size), nn.ReLU(), nn.Linear(config.token_size, config.token_size)
        )

    def forward(self, chord_db: torch.Tensor) -> torch.Tensor:
        x = self.pos(self.convs(chord_db).permute(0, 2, 3, 1)).flatten(1, 2)
        return self.mlp(self.norm(x))


class SlotAttention(nn.Module):
    """Locatello et al.'s iterative attention, with a learned Gaussian init per slot."""

    def __init__(self, config: MusicSlotsConfig):
        super().__init__()
        self.iters, self.epsilon, self.implicit = config.iters, config.epsilon, config.implicit
        self.scale = config.attention_size**-0.5 if config.attention_logits == "scaled" else 1.0
        # With implicit differentiation no gradient reaches the initialisation (see forward): frozen,
        # so that DDP, which waits for a gradient of every trainable parameter, does not wait forever.
        self.mu = nn.Parameter(nn.init.xavier_uniform_(torch.empty(config.num_slots, config.slot_size)), requires_grad=not config.implicit)
        self.log_sigma = nn.Parameter(nn.init.xavier_uniform_(torch.empty(config.num_slots, config.slot_size)), requires_grad=not config.implicit)
        self.norm_inputs = nn.LayerNorm(config.token_size)
        self.norm_slots = nn.LayerNorm(config.slot_size)
        self.norm_mlp = nn.LayerNorm(config.slot_size)
        self.to_q = nn.Linear(config.slot_size, config.attention_size, bias=False)
        self.to_k = nn.Linear(config.token_size, config.attention_size, bias=False)
        self.to_v = nn.Linear(config.token_size, config.attention_size, bias=False)
        self.gru = nn.GRUCell(config.attention_size, config.slot_size)
        self.mlp = nn.Sequential(nn.Linear(config.slot_size, config.mlp_hidden), nn.ReLU(), nn.Linear(config.mlp_hidden, config.slot_size))

    def step(self, slots: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One iteration: the updated slots [B, K, D] and the attention [B, K, N] (each input's share per slot)."""
        q = self.to_q(self.norm_slots(slots))
        # slots compete for each input (softmax over slots), then each slot takes
        # the weighted mean of the inputs it won
        attn = torch.einsum("bkd,bnd->bkn", q, k).mul(self.scale).softmax(dim=1)
        weights = attn + self.epsilon
        updates = torch.einsum("bkn,bnd->bkd", weights / weights.sum(-1, keepdim=True), v)
        slots = self.gru(updates.flatten(0, 1), slots.flatten(0, 1)).view_as(slots)
        return slots + self.mlp(self.norm_mlp(slots)), attn

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """tokens [B, N, token_size] -> slots [B, K, slot_size] and the last iteration's attention [B, K, N]."""
        tokens = self.norm_inputs(tokens)
        k, v = self.to_k(tokens), self.to_v(tokens)
        noise = torch.randn(tokens.shape[0], *self.mu.shape, device=tokens.device, dtype=tokens.dtype)
        slots = self.mu + self.log_sigma.exp() * noise
        if not self.implicit:
            for _ in range(self.iters - 1):
                slots, _ = self.step(slots, k, v)
            return self.step(slots, k, v)
        # Chang et al. 2022, first-order implicit gradient: differentiate only the
        # last step, taken from the detached (approximate) fixed point. The fixed
        # point does not depend on the init, so mu and log_sigma get no gradient:
        # they keep their random values and the sampled noise breaks the symmetry.
        with torch.no_grad():
            for _ in range(self.iters - 1):
                slots, _ = self.step(slots, k, v)
        return self.step(slots.detach(), k, v)


class BroadcastDecoder(nn.Module):
    """[N, slot_size] -> [N, channels, F, T]: the paper's spatial broadcast. Every grid cell gets the
    slot plus a learned embedding of its position, so where a cell lies enters additively and the
    convolutions must turn it into a note's rows (`decoder_input: linear` is the AE's LatentDecoder)."""

    def __init__(self, config: MusicSlotsConfig, out_channels: int):
        super().__init__()
        self.grid = config.decoder_grid
        self.pos = SoftPositionEmbedding(config.slot_size, *self.grid)
        self.deconvs = deconv_stack(config.slot_size, config.decoder_channels, config.decoder_upsampling, config.decoder_kernel, out_channels)

    def forward(self, slots: torch.Tensor) -> torch.Tensor:
        x = slots[:, None, None, :].expand(-1, *self.grid, -1)
        return self.deconvs(self.pos(x).permute(0, 3, 1, 2))


def floor_db(db: torch.Tensor, top_db: float) -> torch.Tensor:
    """amplitude_to_DB's floors applied to dB values: amin (-100 dB), then top_db under each map's max.

    The max is taken over the last two axes, so each [F, T] map gets its own floor.
    """
    db = db.clamp_min(AMIN_DB)
    return torch.maximum(db, db.amax(dim=(-2, -1), keepdim=True) - top_db)


def compose(slot_db: torch.Tensor, alpha_logits: torch.Tensor | None, mask_norm: str, top_db: float) -> dict[str, torch.Tensor]:
    """Eq. 1 in the log domain: x_hat = 10 log10(sum_k 10^(x_k/10) * f_norm(m_k)).

    slot_db, alpha_logits [B, K, F, T]. Powers are never formed: each slot's
    contribution in dB is x_k + 10 log10 f_norm(m_k), and the sum over slots is a
    logsumexp shifted by the loudest slot, so large or tiny dB values neither
    overflow nor lose gradient.
    Returns the composed chord [B, 1, F, T], each slot's contribution [B, K, F, T]
    (both floored like an input spectrogram) and the weights f_norm(m_k).
    """
    if mask_norm == "none":
        log_alpha = torch.zeros((), dtype=slot_db.dtype, device=slot_db.device)
    elif mask_norm == "softmax":
        log_alpha = F.log_softmax(alpha_logits, dim=1)
    elif mask_norm == "sigmoid":
        log_alpha = F.logsigmoid(alpha_logits)
    else:
        raise ValueError(f"unknown mask_norm {mask_norm!r}")
    contribution_db = slot_db + DB_PER_LN * log_alpha
    # logsumexp over slots, written out: torch.logsumexp is ~10x slower on CPU for
    # this layout. The shift is detached because the result does not depend on it.
    peak = contribution_db.detach().amax(dim=1, keepdim=True)
    recon_db = peak + DB_PER_LN * ((contribution_db - peak) / DB_PER_LN).exp().sum(1, keepdim=True).log()
    return {
        "recon_db": floor_db(recon_db, top_db),
        "slots_db": floor_db(contribution_db, top_db),
        "alphas": log_alpha.exp().expand_as(slot_db),
    }


class MusicSlots(nn.Module):
    def __init__(self, config: MusicSlotsConfig, data: DataSpec):
        super().__init__()
        size = tuple(data.input_shape[1:])
        if data.input_shape[0] != 1:
            raise PartitaError(f"MusicSlots composes single-channel spectrograms, the data has {data.input_shape[0]} channels", "use a chord data set (1 x mel x frames)")
        reached = upsampled_size(config.decoder_grid, config.decoder_upsampling)
        if reached != size:
            n = min(config.decoder_upsampling, max_doublings(size))
            raise PartitaError(
                f"musicslots decoder: grid {tuple(config.decoder_grid)} doubled {config.decoder_upsampling} times gives {reached[0]}x{reached[1]}, not the data's {size[0]}x{size[1]}",
                f"set model.decoder_grid to ({size[0] // 2**n}, {size[1] // 2**n}) with model.decoder_upsampling = {n}",
            )
        self.mask_norm, self.top_db = config.mask_norm, config.top_db
        self.encoder = Encoder(config, data)
        self.slot_attention = SlotAttention(config)
        out_channels = 1 if config.mask_norm == "none" else 2
        if config.decoder_input == "broadcast":
            self.decoder = BroadcastDecoder(config, out_channels)
        else:
            self.decoder = LatentDecoder(config.slot_size, config.decoder_channels, config.decoder_grid, config.decoder_upsampling, config.decoder_kernel, out_channels)
        # Spectrograms span about +-20 dB around -20 dB, while the networks' natural scale is
        # about 1: in raw dB the first few hundred steps only grow weights to reach the level
        # and range of the data. The affine change of units leaves the architecture as it is.
        self.db_offset, self.db_scale = config.db_offset, config.db_scale

    def forward(self, chord_db: torch.Tensor) -> dict[str, torch.Tensor]:
        """chord_db [B, 1, F, T] -> recon_db [B, 1, F, T], slots_db / decoded_db / alphas [B, K, F, T], slots [B, K, D],
        attention [B, K, tokens] (the last iteration's).

        slots_db is each slot's contribution to the mix (its note spectrogram),
        decoded_db the decoder's raw dB output before the alpha weights.
        """
        slots, attention = self.slot_attention(self.encoder((chord_db - self.db_offset) / self.db_scale))
        decoded = self.decoder(slots.flatten(0, 1)).unflatten(0, slots.shape[:2]).float()  # each slot on its own; composed in float32 even under bf16 autocast: dB values need the mantissa
        slot_db = self.db_offset + self.db_scale * decoded[:, :, 0]
        alpha_logits = decoded[:, :, 1] if self.mask_norm != "none" else None
        return {**compose(slot_db, alpha_logits, self.mask_norm, self.top_db), "decoded_db": slot_db, "slots": slots, "attention": attention}


class MusicSlotsFamily(ModelFamily):
    has_representation = True
    name = "musicslots"
    config_class = MusicSlotsConfig
    selection_metric = "miou"
    selection_mode = "max"

    def build(self, config: MusicSlotsConfig, data: DataSpec) -> MusicSlots:
        return MusicSlots(config, data)

    def loss(self, model: MusicSlots, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        out = model(batch["chord_db"])
        loss = F.mse_loss(out["recon_db"], batch["chord_db"])
        # slots that put any bin above the mask level: collapse onto one slot shows here first
        audible = (out["slots_db"].detach() >= MASK_DB).flatten(2).any(-1).float().sum(1).mean()
        return loss, {"loss": loss.item(), "audible_slots": audible.item(), **symmetry_diagnostics(out["attention"].detach(), out["slots"].detach())}

    def evaluate(self, model: MusicSlots, batches: Iterable[Batch]) -> dict[str, float]:
        note_mse, iou, loss_sum = [], [], 0.0
        with torch.no_grad():
            for batch in batches:
                chord_db = batch["chord_db"].to(model_device(model))
                out = model(chord_db)
                loss_sum += F.mse_loss(out["recon_db"], chord_db, reduction="none").flatten(1).mean(1).sum().item()
                matching = match_notes(out["slots_db"], batch["note_db"].to(chord_db.device), batch["note_valid"], MASK_DB)
                note_mse.append(matching.note_mse)
                iou.append(matching.iou)
        note_mse, iou = np.concatenate(note_mse), np.concatenate(iou)
        return {"note_mse": float(note_mse.mean()), "miou": float(iou.mean()), "loss": loss_sum / len(note_mse)}

    def representation(self, model: MusicSlots, batch: Batch) -> Representation:
        """Each note's slot vector, the slot matched to it by MSE (the paper's probe input)."""
        out = model(batch["chord_db"].to(model_device(model)))
        matching = match_notes(out["slots_db"], batch["note_db"], batch["note_valid"], MASK_DB)
        slot = torch.from_numpy(matching.mse_slot).to(out["slots"].device)
        features = out["slots"].gather(1, slot.clamp(min=0).unsqueeze(-1).expand(-1, -1, out["slots"].shape[-1]))
        return Representation(features, per_note=True, matched=slot >= 0)

    def figure(self, model: MusicSlots, batch: Batch, examples: int = 3):
        """Per example, top row: chord, reconstruction, each slot; bottom row: the true note matched (by MSE) under its slot."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        chord_db = batch["chord_db"][:examples].to(model_device(model))
        with torch.no_grad():
            out = model(chord_db)
        note_db, note_valid = batch["note_db"][:examples], batch["note_valid"][:examples]
        slots_db = out["slots_db"].cpu()
        matching = match_notes(slots_db, note_db, note_valid, MASK_DB)
        n, num_slots = len(chord_db), slots_db.shape[1]

        fig = Figure(figsize=(1.5 * (num_slots + 2), 2.6 * n))
        FigureCanvasAgg(fig)
        # fixed margins: the axes are bare images, and a layout engine over the 2n x (K + 2) grid
        # took longer than drawing it (0.85 of 1.5 s per sweep trial)
        axes = fig.subplots(2 * n, num_slots + 2, squeeze=False, gridspec_kw=dict(left=0.01, right=0.99, bottom=0.01, top=0.97, wspace=0.06, hspace=0.3))
        for ax in axes.flat:
            ax.set_axis_off()
        for i in range(n):
            top, bottom = axes[2 * i], axes[2 * i + 1]
            vmax = max(0.0, float(chord_db[i].max()))
            _show(top[0], chord_db[i, 0].cpu(), f"chord {i}", vmax)
            _show(top[1], out["recon_db"][i, 0].cpu(), "reconstruction", vmax)
            for k in range(num_slots):
                _show(top[k + 2], slots_db[i, k], f"slot {k}", vmax)
            for note, k in enumerate(matching.mse_slot[i]):
                if k >= 0:
                    mse = float((note_db[i, note] - slots_db[i, k]).pow(2).mean())
                    _show(bottom[k + 2], note_db[i, note], f"note {note} (MSE {mse:.1f})", vmax)
            bottom[0].text(0, 0.5, f"note MSE {matching.note_mse[i]:.1f}\nIoU {matching.iou[i]:.2f}", fontsize=8, transform=bottom[0].transAxes)
        return fig


def symmetry_diagnostics(attention: torch.Tensor, slots: torch.Tensor) -> dict[str, float]:
    """How far the slots are from the symmetric solution, where every slot is the whole chord.

    attention_entropy: each input's entropy over slots, in units of log K (1: every input shared
    equally, so every slot averages the same inputs; 0: each input claimed by one slot).
    slot_similarity: mean cosine similarity of a chord's slots over its K(K-1) pairs (1: identical).
    A single slot has no symmetry to break: nothing is reported.
    """
    num_slots = attention.shape[1]
    if num_slots < 2:
        return {}
    entropy = -(attention * attention.clamp_min(1e-12).log()).sum(1).mean() / math.log(num_slots)
    unit = F.normalize(slots, dim=-1)
    cosine = torch.einsum("bkd,bjd->bkj", unit, unit)
    similarity = (cosine.sum((1, 2)) - num_slots) / (num_slots * (num_slots - 1))
    return {"attention_entropy": entropy.item(), "slot_similarity": similarity.mean().item()}


def _show(ax, image: torch.Tensor, title: str, vmax: float) -> None:
    ax.imshow(image.numpy(), origin="lower", aspect="auto", cmap="magma", vmin=AMIN_DB, vmax=vmax)
    ax.set_title(title, fontsize=7)


MUSICSLOTS = MusicSlotsFamily()
