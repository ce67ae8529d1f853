"""What each Ray Train worker runs: the generic training loop for any model family.

The family supplies build / loss / evaluate / figure; this loop supplies the
rest: DDP (gloo on CPU, nccl on GPU, via prepare_model), bf16 autocast on GPU,
warm-up + cosine learning rate, gradient clipping, a step-based and resumable
data order, validation and checkpoints every `eval_every` steps, the best state
by the family's selection metric, and a final test evaluation. Only rank 0
evaluates and logs to MLflow; a non-finite loss stops every rank together.
The same loop runs on Ray Train workers and inside a Tune trial's own process
(orchestration.train_sessions); it logs the seconds of each phase as time/*.
"""

from __future__ import annotations

import contextlib
import json
import math
import tempfile
import time
from pathlib import Path

import torch

OUTCOME = "outcome.json"  # in the final checkpoint: how the run ended, and its test metrics
STATE = "state.pt"


def lr_factor(step: int, warmup: int, decay: int) -> float:
    """Linear warm-up to 1, then cosine decay to 0 over `decay` steps (constant if decay is 0)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if not decay:
        return 1.0
    progress = min(1.0, (step - warmup) / decay)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def epoch_order(n: int, seed: int, epoch: int, rank: int, world: int) -> torch.Tensor:
    """This rank's example order for an epoch: a seeded permutation, dealt round-robin."""
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    usable = n - n % world  # equal shares keep the ranks' step counts equal
    return torch.randperm(n, generator=generator)[:usable][rank::world]


def batch_indices(n: int, batch: int, seed: int, step: int, rank: int, world: int) -> torch.Tensor:
    """Indices of this rank's batch at `step`; depends only on the step, so resuming is exact."""
    per_epoch = max(1, (n // world) // batch)
    epoch, offset = divmod(step, per_epoch)
    return epoch_order(n, seed, epoch, rank, world)[offset * batch : (offset + 1) * batch]


def build_model(config, spec) -> torch.nn.Module:
    """The family's model from the run's seed (every rank starts from the same weights), in the run's weight layout."""
    from components.models.registry import get_family

    torch.manual_seed(config.train.seed)
    model = get_family(config.model.family).build(config.model, spec)
    # Module.to converts only 4-D and 5-D tensors, so models without convolutions are left as they are
    return model.to(memory_format=torch.channels_last) if config.train.channels_last else model


def to_device(batch: dict, device: torch.device) -> dict:
    return {key: value.to(device, non_blocking=True) for key, value in batch.items()}


class PhaseClock:
    """Seconds spent per phase of a run: where its fixed cost goes beside the training steps."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def __call__(self, phase: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start


def train_loop_per_worker(loop_config: dict) -> None:
    """A TorchTrainer worker's entry point."""
    from orchestration.train_sessions import WorkerSession

    run_loop(loop_config, WorkerSession())


def run_loop(loop_config: dict, session) -> None:
    """Train (or resume and finish) one run; `session` is where it runs (train_sessions)."""
    import torch.distributed as dist

    from components.errors import PartitaError
    from components.models.registry import get_family
    from orchestration.config import validate
    from orchestration.tracking import RunLogger
    from orchestration.view_stream import training_data

    config = validate(loop_config["config"])
    train = config.train
    family = get_family(config.model.family)
    rank, world = session.rank, session.world
    torch.set_num_threads(train.cpus_per_worker)
    device = session.device
    amp = train.amp and device.type == "cuda"

    per_worker = train.batch_size // world
    data = training_data(loop_config, config, session, per_worker)

    model = build_model(config, data.spec)
    model = session.prepare(model)
    core = model.module if hasattr(model, "module") else model
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, train.warmup_steps, train.decay_steps))

    step, best_valid, best_state = 0, None, None
    checkpoint = session.checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            path = Path(folder) / STATE
            if not path.is_file():
                raise PartitaError(f"checkpoint {checkpoint.path} has no {STATE}", "delete the run's folder under runs/train to start over")
            state = torch.load(path, map_location="cpu", weights_only=False)
        core.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        schedule.load_state_dict(state["schedule"])
        step, best_valid, best_state = state["step"], state["best_valid"], state["best_state"]
        torch.set_rng_state(state["rng"])
        data.resume(state.get("data"))
        if rank == 0:
            print(f"resuming at step {step} from {checkpoint.path}", flush=True)

    logger = RunLogger(loop_config["run_id"], loop_config["tracking_uri"]) if rank == 0 else None
    nodes = session.node_ids()
    if rank == 0:
        logger.tags({"partita.nodes": ",".join(nodes)})  # where each rank runs (this attempt's)
    selection, mode = family.selection_metric, family.selection_mode

    def evaluate(split: str) -> dict[str, float]:
        core.eval()
        # Families may sample at evaluation (MusicSlots draws its initial slots): a fixed
        # seed makes evaluations comparable, and forking keeps the training stream intact.
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), torch.no_grad(), torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            torch.manual_seed(train.seed)
            batches = (data.prepare(b) for b in data.eval_splits[split].batches(per_worker * 4, train.eval_examples))
            metrics = family.evaluate(core, batches)
        core.train()
        return metrics

    clock = PhaseClock()

    def save_and_report(metrics: dict, outcome: dict | None = None) -> None:
        with clock("checkpoint"), tempfile.TemporaryDirectory() as folder:
            if rank == 0:
                state = {
                    "model": core.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "schedule": schedule.state_dict(),
                    "step": step,
                    "best_valid": best_valid,
                    "best_state": best_state,
                    "rng": torch.get_rng_state(),
                    "data": data.state(),
                    "spec": data.spec,  # what `family.build` needs, so `partita apply` rebuilds the model without the data set
                }
                torch.save(state, Path(folder) / STATE)
                if outcome is not None:
                    (Path(folder) / OUTCOME).write_text(json.dumps(outcome))
            session.report(metrics, Path(folder) if rank == 0 else None)

    model.train()
    clock.seconds["start"] = time.time() - loop_config["started"]  # since train() began: processes, data, model, restore
    train_batches = data.train_batches(step)
    running, started, last_log, waited = {}, time.perf_counter(), step, 0.0
    while step < train.steps:
        stepping = time.perf_counter()
        batch = next(train_batches)
        waited += time.perf_counter() - stepping
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=amp):
            loss, logs = family.loss(model, batch)
        finite = torch.tensor([float(torch.isfinite(loss))], device=device)
        if world > 1:
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        if finite.item() < 1:
            reason = (
                f"the training loss became {loss.item()} at step {step}; "
                "lower train.lr, keep train.grad_clip on, or check the data"
            )
            if rank == 0:
                print(f"stopping: {reason}", flush=True)
            save_and_report({"step": step, "failed": 1.0}, {"status": "failed", "reason": reason, "step": step})
            return
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if train.grad_clip:
            logs["grad_norm"] = float(torch.nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip))
        optimizer.step()
        schedule.step()
        step += 1
        for key, value in logs.items():
            running[key] = running.get(key, 0.0) + float(value)
        clock.seconds["steps"] = clock.seconds.get("steps", 0.0) + time.perf_counter() - stepping

        if rank == 0 and (step % train.log_every == 0 or step == train.steps):
            elapsed = time.perf_counter() - started
            count = step - last_log
            averaged = {f"train/{k}": v / count for k, v in running.items()}
            averaged["train/lr"] = schedule.get_last_lr()[0]
            averaged["train/samples_per_s"] = count * train.batch_size / max(elapsed, 1e-9)
            averaged["train/data_wait_fraction"] = waited / max(elapsed, 1e-9)  # of wall time, waiting for the next batch
            with clock("log"):
                logger.metrics(averaged, step)
            print(f"step {step}/{train.steps}  loss {averaged.get('train/loss', float('nan')):.4g}  {averaged['train/samples_per_s']:.1f} samples/s", flush=True)
            running, started, last_log, waited = {}, time.perf_counter(), step, 0.0

        if step % train.eval_every == 0 or step == train.steps:
            metrics = {"step": step}
            if rank == 0:
                with clock("eval"):
                    valid = evaluate("valid")
                best = None if best_valid is None else best_valid[selection]
                if best is None or (valid[selection] > best if mode == "max" else valid[selection] < best):
                    best_valid = valid
                    best_state = {k: v.detach().cpu().clone() for k, v in core.state_dict().items()}
                shown = {f"val/{k}": v for k, v in valid.items()} | {f"val/best_{selection}": best_valid[selection]}
                with clock("log"):
                    logger.metrics(shown, step)
                metrics |= shown
                print(f"step {step}: " + "  ".join(f"{k} {v:.4g}" for k, v in valid.items()), flush=True)
            if step < train.steps:
                save_and_report(metrics)

    # the end (also reached at once when a finished run is started again)
    outcome = {"status": "finished", "step": step}
    final = {"step": step}
    if rank == 0:
        if best_state is not None:
            core.load_state_dict(best_state)
        with clock("eval"):
            test = evaluate("test")
            valid = best_valid or evaluate("valid")
        with clock("log"):
            logger.metrics({f"test/{k}": v for k, v in test.items()} | {f"best_val/{k}": v for k, v in valid.items()}, step)
        with clock("figure"):
            figure = family.figure(core, data.prepare(data.eval_splits["test"].batch(torch.arange(min(4, len(data.eval_splits["test"]))))))
            if figure is not None:
                logger.figure(figure, "figures/test_decomposition.png")
        outcome |= {"test": test, "valid": valid}
        final |= {f"test/{k}": v for k, v in test.items()} | {f"val/{k}": v for k, v in valid.items()}
    save_and_report(final, outcome)
    if rank == 0:
        logger.metrics({f"time/{phase}_s": seconds for phase, seconds in clock.seconds.items()}, step)
