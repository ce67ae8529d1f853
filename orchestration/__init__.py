"""partita orchestration: configs, Ray runtime, Ray Data builds, training, sweeps, tracking."""
