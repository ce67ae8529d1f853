"""Training helpers that are plain PyTorch (no Ray): gradient clipping policies."""
