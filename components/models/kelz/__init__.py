"""Kelz and Widmer: a U-Net that maps any piano onto the canonical piano, then linear non-negative demixing (the family: kelz.family)."""
