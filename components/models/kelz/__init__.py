"""Kelz and Widmer: a U-Net that maps any piano onto the canonical piano, then linear non-negative demixing."""

from components.models.kelz.family import KELZ, Kelz, KelzConfig

__all__ = ["KELZ", "Kelz", "KelzConfig"]
