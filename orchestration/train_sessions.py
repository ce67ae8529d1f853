"""Where the one training loop (train_loop.run_loop) runs, and how it checkpoints there.

- `WorkerSession`: a Ray Train worker of a TorchTrainer (any number of workers, DDP);
  Ray Train persists checkpoints and restores them after a worker failure.
- `TrialSession`: a single-worker run inside a Tune trial's own process, without a
  TorchTrainer: no controller, worker group or process group to start per trial (the
  fixed cost that made short sweeps slower than running trials one after another).
  Its checkpoints go to the same run folder, named the same way, so a rerun of the
  sweep, a Tune retry of the trial (tune.FailureConfig), probes and reports find them
  exactly as they find a TorchTrainer run's.
"""

from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path

import torch

CHECKPOINT_PREFIX = "checkpoint_"
KEEP = 2  # checkpoints kept per run, as the TorchTrainer's CheckpointConfig(num_to_keep=2)


def checkpoints(run_folder: Path) -> list[Path]:
    """A run's complete checkpoints, oldest first (names carry the time, as Ray Train's do)."""
    if not run_folder.is_dir():
        return []
    return sorted(p.parent for p in run_folder.glob(f"{CHECKPOINT_PREFIX}*/state.pt"))


def node_id() -> str:
    import ray

    return ray.get_runtime_context().get_node_id()


class WorkerSession:
    def __init__(self):
        import ray.train
        import ray.train.torch

        context = ray.train.get_context()
        self.rank, self.world = context.get_world_rank(), context.get_world_size()
        self.device = ray.train.torch.get_device()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        import ray.train.torch

        return ray.train.torch.prepare_model(model)

    def checkpoint(self):
        import ray.train

        return ray.train.get_checkpoint()

    def report(self, metrics: dict, folder: Path | None) -> None:
        import ray.train

        ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(folder) if folder else None)

    def dataset_shard(self, name: str):
        """This worker's share of a stream passed as TorchTrainer(datasets=...)."""
        import ray.train

        return ray.train.get_dataset_shard(name)

    def node_ids(self) -> list[str]:
        """Every rank's Ray node, by rank."""
        import torch.distributed as dist

        ids: list = [None] * self.world
        dist.all_gather_object(ids, node_id())
        return ids


class TrialSession:
    rank, world = 0, 1

    def __init__(self, run_folder: Path, use_gpu: bool, datasets: dict | None = None):
        self.folder, self.datasets = run_folder, datasets or {}
        self.device = torch.device("cuda" if use_gpu else "cpu")

    def dataset_shard(self, name: str):
        """The whole stream (one worker): a DataIterator, as get_dataset_shard gives a Train worker."""
        return self.datasets[name].iterator()

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(self.device)

    def checkpoint(self):
        from ray import tune

        found = checkpoints(self.folder)
        return tune.Checkpoint.from_directory(str(found[-1])) if found else None

    def report(self, metrics: dict, folder: Path | None) -> None:
        from ray import tune

        if folder is not None:
            name = CHECKPOINT_PREFIX + datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S.%f")
            staging = self.folder / f".{name}"
            shutil.copytree(folder, staging)
            os.replace(staging, self.folder / name)  # complete or absent: a kill mid-copy leaves no checkpoint
            for old in checkpoints(self.folder)[:-KEEP]:
                shutil.rmtree(old)
        tune.report(metrics)

    def node_ids(self) -> list[str]:
        return [node_id()]
