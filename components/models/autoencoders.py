"""The MusicSlots baselines: AutoEncoder, (beta-)VAE and the supervised CNN.

Layouts are the paper's Tables 8-10: a strided convolutional encoder to a small
grid (128x32 -> 8x2x128, flattened to 2048), a 128-d latent, and a decoder that
maps the latent back to the grid and up-samples it with transposed convolutions.
Every size is a config field whose default is the paper's. The convolution
stacks here are shared with the MusicSlots encoder and slot decoder.
"""

from __future__ import annotations

from typing import Annotated, Iterable, Literal

import torch
import torch.nn.functional as F
from pydantic import AfterValidator, Field, field_validator
from torch import nn

from components.errors import PartitaError
from components.models.base import Batch, DataSpec, ModelConfig, ModelFamily, Representation


def _odd(kernel: int) -> int:
    if kernel % 2 == 0:
        raise ValueError(f"kernel size {kernel} must be odd")
    return kernel


# odd kernels keep 'same' padding exact, so each stride-2 layer halves or doubles a size
Kernel = Annotated[int, Field(gt=0), AfterValidator(_odd)]


def conv_stack(in_channels: int, channels: int, layers: int, kernel: int, stride: tuple[int, int]) -> nn.Sequential:
    """`layers` x (Conv2d kernel x kernel, 'same' padding, `stride`, ReLU)."""
    blocks = []
    for i in range(layers):
        blocks += [nn.Conv2d(in_channels if i == 0 else channels, channels, kernel, stride, kernel // 2), nn.ReLU()]
    return nn.Sequential(*blocks)


def conv_output_size(size: tuple[int, int], layers: int, stride: tuple[int, int]) -> tuple[int, int]:
    """Feature-map size after `conv_stack`: each layer gives ceil(size / stride)."""
    for _ in range(layers):
        size = tuple(-(-n // s) for n, s in zip(size, stride))
    return size


def deconv_stack(in_channels: int, channels: int, upsampling: int, kernel: int, out_channels: int) -> nn.Sequential:
    """The spatial-broadcast decoder's convolutions (Tables 7 and 9).

    `upsampling` x ConvTranspose(kernel, stride 2, ReLU), each doubling both axes,
    then ConvTranspose(kernel, stride 1, ReLU) and ConvTranspose(3x3) to `out_channels`.
    """
    blocks = []
    for i in range(upsampling):
        blocks += [nn.ConvTranspose2d(in_channels if i == 0 else channels, channels, kernel, 2, kernel // 2, output_padding=1), nn.ReLU()]
    blocks += [
        nn.ConvTranspose2d(channels if upsampling else in_channels, channels, kernel, 1, kernel // 2),
        nn.ReLU(),
        nn.ConvTranspose2d(channels, out_channels, 3, 1, 1),
    ]
    return nn.Sequential(*blocks)


def upsampled_size(grid: tuple[int, int], upsampling: int) -> tuple[int, int]:
    """Output size of `deconv_stack` on a `grid` input."""
    return grid[0] * 2**upsampling, grid[1] * 2**upsampling


def max_doublings(size: tuple[int, int]) -> int:
    """How many times both axes of `size` can be halved exactly."""
    n = 0
    while size[0] % 2 ** (n + 1) == 0 and size[1] % 2 ** (n + 1) == 0:
        n += 1
    return n


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


# --- multi-hot targets: one bit per (instrument, pitch) ---------------------------


def multi_hot(pitch: torch.Tensor, program: torch.Tensor, note_valid: torch.Tensor, n_pitches: int, n_programs: int) -> torch.Tensor:
    """[B, N] vocabulary indices and validity -> [B, n_programs * n_pitches] float target.

    Bit `program * n_pitches + pitch` is set for every valid note.
    """
    size = n_programs * n_pitches
    # padding rows write to a spare last column, dropped after the scatter
    index = torch.where(note_valid, program * n_pitches + pitch, torch.full_like(pitch, size))
    target = torch.zeros(pitch.shape[0], size + 1, device=pitch.device)
    return target.scatter_(1, index, 1.0)[:, :size]


def notes_from_multi_hot(target: torch.Tensor, n_pitches: int) -> list[set[tuple[int, int]]]:
    """[B, n_programs * n_pitches] multi-hot -> per chord, the set of (pitch index, program index)."""
    chords = [set() for _ in range(target.shape[0])]
    for b, bit in (target > 0.5).nonzero().tolist():
        chords[b].add((bit % n_pitches, bit // n_pitches))
    return chords


# --- configs -------------------------------------------------------------------


class ConvEncoderFields(ModelConfig):
    """The encoder of Table 8: `layers` x Conv(kernel, stride 2, `channels`, ReLU)."""

    channels: int = Field(128, gt=0)
    layers: int = Field(4, gt=0, description="stride-2 conv layers; the decoder mirrors them with as many doublings")
    kernel: Kernel = 5


class AutoencoderConfig(ConvEncoderFields):
    family: Literal["autoencoder"] = "autoencoder"
    latent_size: int = Field(128, gt=0)


class VAEConfig(ConvEncoderFields):
    family: Literal["vae"] = "vae"
    latent_size: int = Field(128, gt=0)
    beta: float = Field(1.0, description="weight of the KL term: 1 = VAE, other values = beta-VAE (paper's best 0.5)")

    @field_validator("beta")
    @classmethod
    def _positive_beta(cls, beta: float) -> float:
        if not beta > 0:
            raise ValueError("beta must be > 0 (it weights the KL term of the ELBO); for a model without the KL term use family 'autoencoder'")
        return beta


class SupervisedCNNConfig(ConvEncoderFields):
    family: Literal["supervised_cnn"] = "supervised_cnn"
    hidden_size: int = Field(128, gt=0, description="the MLP's hidden layer (Table 10)")
    # regularisers the paper does not list (its defaults switch them off)
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the flattened encoder output and the hidden layer")
    gain_augment_db: float = Field(0.0, ge=0, description="training only: each chord shifted by a uniform random gain in +-this many dB")
    db_offset: float = Field(0.0, description="the encoder sees (dB - db_offset) / db_scale")
    db_scale: float = Field(1.0, gt=0)


# --- modules -------------------------------------------------------------------


class ConvEncoder(nn.Module):
    """[B, C, F, T] -> [B, channels * F/2^layers * T/2^layers] (Table 8)."""

    def __init__(self, config: ConvEncoderFields, data: DataSpec):
        super().__init__()
        size = tuple(data.input_shape[1:])
        if max_doublings(size) < config.layers:
            raise PartitaError(
                f"{config.family}: {config.layers} stride-2 layers cannot be mirrored back to {size[0]}x{size[1]} spectrograms",
                f"set model.layers to at most {max_doublings(size)}",
            )
        self.grid = (size[0] // 2**config.layers, size[1] // 2**config.layers)
        self.convs = conv_stack(data.input_shape[0], config.channels, config.layers, config.kernel, (2, 2))
        self.out_size = config.channels * self.grid[0] * self.grid[1]

    def forward(self, chord_db: torch.Tensor) -> torch.Tensor:
        return self.convs(chord_db).flatten(1)


class LatentDecoder(nn.Module):
    """[B, latent] -> [B, out_channels, F, T]: Linear to a `channels` x `grid` map (every cell its own
    weights on the latent), then Table 9's deconvolutions. Also MusicSlots's `decoder_input: linear`."""

    def __init__(self, latent_size: int, channels: int, grid: tuple[int, int], upsampling: int, kernel: int, out_channels: int):
        super().__init__()
        self.shape = (channels, *grid)
        self.linear = nn.Linear(latent_size, channels * grid[0] * grid[1])
        self.deconvs = deconv_stack(channels, channels, upsampling, kernel, out_channels)

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.deconvs(self.linear(latent).view(-1, *self.shape))


class Autoencoder(nn.Module):
    def __init__(self, config: AutoencoderConfig, data: DataSpec):
        super().__init__()
        self.encoder = ConvEncoder(config, data)
        self.to_latent = nn.Linear(self.encoder.out_size, config.latent_size)
        self.decoder = LatentDecoder(config.latent_size, config.channels, self.encoder.grid, config.layers, config.kernel, data.input_shape[0])

    def encode(self, chord_db: torch.Tensor) -> torch.Tensor:
        return self.to_latent(self.encoder(chord_db))

    def forward(self, chord_db: torch.Tensor) -> dict[str, torch.Tensor]:
        latent = self.encode(chord_db)
        return {"recon_db": self.decoder(latent), "latent": latent}


class VAE(nn.Module):
    def __init__(self, config: VAEConfig, data: DataSpec):
        super().__init__()
        self.beta = config.beta
        self.encoder = ConvEncoder(config, data)
        self.to_mu = nn.Linear(self.encoder.out_size, config.latent_size)
        self.to_logvar = nn.Linear(self.encoder.out_size, config.latent_size)
        self.decoder = LatentDecoder(config.latent_size, config.channels, self.encoder.grid, config.layers, config.kernel, data.input_shape[0])

    def encode(self, chord_db: torch.Tensor) -> torch.Tensor:
        """The posterior mean: the representation a probe reads."""
        return self.to_mu(self.encoder(chord_db))

    def forward(self, chord_db: torch.Tensor) -> dict[str, torch.Tensor]:
        features = self.encoder(chord_db)
        mu, logvar = self.to_mu(features), self.to_logvar(features)
        # sample while training; decode the mean in eval so validation is deterministic
        latent = mu + torch.randn_like(mu) * (0.5 * logvar).exp() if self.training else mu
        return {"recon_db": self.decoder(latent), "mu": mu, "logvar": logvar}


class SupervisedCNN(nn.Module):
    """Table 10: the encoder, then MLP -> one logit per (instrument, pitch)."""

    def __init__(self, config: SupervisedCNNConfig, data: DataSpec):
        super().__init__()
        self.n_pitches, self.n_programs = data.n_pitches, data.n_programs
        self.encoder = ConvEncoder(config, data)
        self.hidden = nn.Sequential(
            nn.Dropout(config.dropout), nn.Linear(self.encoder.out_size, config.hidden_size), nn.ReLU(), nn.Dropout(config.dropout)
        )
        self.head = nn.Linear(config.hidden_size, data.n_programs * data.n_pitches)
        self.db_offset, self.db_scale, self.gain_augment_db = config.db_offset, config.db_scale, config.gain_augment_db

    def encode(self, chord_db: torch.Tensor) -> torch.Tensor:
        if self.training and self.gain_augment_db:
            # the same chord louder or softer: pitch and instrument do not change with level
            chord_db = chord_db + torch.empty(len(chord_db), 1, 1, 1, device=chord_db.device).uniform_(-self.gain_augment_db, self.gain_augment_db)
        return self.hidden(self.encoder((chord_db - self.db_offset) / self.db_scale))

    def forward(self, chord_db: torch.Tensor) -> torch.Tensor:
        return self.head(self.encode(chord_db))

    def target(self, batch: Batch) -> torch.Tensor:
        return multi_hot(batch["pitch"], batch["program"], batch["note_valid"], self.n_pitches, self.n_programs)


def gaussian_kl(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)), summed over latent dims, mean over the batch."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1.0 - logvar).sum(-1).mean()


# --- families ------------------------------------------------------------------


class _ReconstructionFamily(ModelFamily):
    has_representation = True
    selection_metric = "loss"
    selection_mode = "min"

    def terms(self, model: nn.Module, chord_db: torch.Tensor) -> dict[str, torch.Tensor]:
        """The loss and its parts, as tensors."""
        out = model(chord_db)
        recon = F.mse_loss(out["recon_db"], chord_db)
        return {"loss": recon, "recon_mse": recon}

    def loss(self, model: nn.Module, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        terms = self.terms(model, batch["chord_db"])
        return terms["loss"], {name: value.item() for name, value in terms.items()}

    def evaluate(self, model: nn.Module, batches: Iterable[Batch]) -> dict[str, float]:
        totals, count = {}, 0
        with torch.no_grad():
            for batch in batches:
                chord_db = batch["chord_db"].to(model_device(model))
                for name, value in self.terms(model, chord_db).items():
                    totals[name] = totals.get(name, 0.0) + value.item() * len(chord_db)
                count += len(chord_db)
        return {name: total / count for name, total in totals.items()}

    def representation(self, model: nn.Module, batch: Batch) -> Representation:
        """The chord's latent (the VAE's posterior mean)."""
        return Representation(model.encode(batch["chord_db"].to(model_device(model))), per_note=False)

    def figure(self, model: nn.Module, batch: Batch, examples: int = 4):
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        chord_db = batch["chord_db"][:examples].to(model_device(model))
        with torch.no_grad():
            recon_db = model(chord_db)["recon_db"]
        fig = Figure(figsize=(4.0, 2.4 * len(chord_db)), layout="constrained")
        FigureCanvasAgg(fig)
        axes = fig.subplots(len(chord_db), 2, squeeze=False)
        for row, (x, x_hat) in enumerate(zip(chord_db.cpu(), recon_db.cpu())):
            for ax, image, title in ((axes[row, 0], x[0], "chord"), (axes[row, 1], x_hat[0], "reconstruction")):
                ax.imshow(image.numpy(), origin="lower", aspect="auto", vmin=-100, vmax=max(0.0, float(x.max())), cmap="magma")
                ax.set_title(title, fontsize=8)
                ax.set_axis_off()
        return fig


class AutoencoderFamily(_ReconstructionFamily):
    name = "autoencoder"
    config_class = AutoencoderConfig

    def build(self, config: AutoencoderConfig, data: DataSpec) -> Autoencoder:
        return Autoencoder(config, data)


class VAEFamily(_ReconstructionFamily):
    """Trained on the negative ELBO as the authors scale it: pixel-mean MSE + beta * KL."""

    name = "vae"
    config_class = VAEConfig

    def build(self, config: VAEConfig, data: DataSpec) -> VAE:
        return VAE(config, data)

    def terms(self, model: VAE, chord_db: torch.Tensor) -> dict[str, torch.Tensor]:
        out = model(chord_db)
        recon = F.mse_loss(out["recon_db"], chord_db)
        kl = gaussian_kl(out["mu"], out["logvar"])
        return {"loss": recon + model.beta * kl, "recon_mse": recon, "kl": kl}


class SupervisedCNNFamily(ModelFamily):
    name = "supervised_cnn"
    config_class = SupervisedCNNConfig
    selection_metric = "chord_accuracy"
    selection_mode = "max"

    def build(self, config: SupervisedCNNConfig, data: DataSpec) -> SupervisedCNN:
        return SupervisedCNN(config, data)

    def loss(self, model: SupervisedCNN, batch: Batch) -> tuple[torch.Tensor, dict[str, float]]:
        logits = model(batch["chord_db"])
        target = model.target(batch)
        loss = F.binary_cross_entropy_with_logits(logits, target)
        return loss, {"loss": loss.item(), "chord_accuracy": chord_accuracy(logits, target).mean().item()}

    def evaluate(self, model: SupervisedCNN, batches: Iterable[Batch]) -> dict[str, float]:
        loss, correct, count = 0.0, 0.0, 0
        with torch.no_grad():
            for batch in batches:
                batch = {key: value.to(model_device(model)) for key, value in batch.items()}
                logits, target = model(batch["chord_db"]), model.target(batch)
                loss += F.binary_cross_entropy_with_logits(logits, target).item() * len(logits)
                correct += chord_accuracy(logits, target).sum().item()
                count += len(logits)
        return {"chord_accuracy": correct / count, "loss": loss / count}


def chord_accuracy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """[B] 1.0 where the multi-hot prediction (sigmoid >= 0.5, i.e. logit >= 0) equals the target exactly."""
    return ((logits >= 0) == (target > 0.5)).all(-1).float()


AUTOENCODER = AutoencoderFamily()
VAE_FAMILY = VAEFamily()
SUPERVISED_CNN = SupervisedCNNFamily()
