"""partita components: data, synthesis, features, models, losses and metrics.

Plain Python, numpy and PyTorch only: nothing here imports Ray, so every piece
runs and tests the same on a laptop, inside a Ray worker, or in a notebook.
"""
