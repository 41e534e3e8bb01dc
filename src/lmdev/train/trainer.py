"""The Trainer: one training of a config, from its first step (or a checkpoint) to its last.

A step draws the global batch, splits it into micro-batches (gradient accumulation), runs
forward and backward under autocast, checks the loss is finite, clips and applies the update,
and moves the schedule on. Metrics accumulate on the device and are read only at log and eval
intervals. The trainer is made of parts with their own state (:mod:`lmdev.train.components`);
the loop in :meth:`Trainer.train` only says when each part acts.

Subclass points (see docs/commands/train.md, "Custom steps"):

- :meth:`Trainer.compute_loss`: the loss of one micro-batch (multi-loss, auxiliary terms);
- :meth:`Trainer.train_step`: forward and backward of a whole step (GAN-like updates with
  a second optimizer: register it in ``self.checkpointer.parts`` to checkpoint it too).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from lmdev.errors import LmdevError
from lmdev.train import checkpoint as ckpt
from lmdev.train.components.callbacks import Callbacks, load_callbacks
from lmdev.train.components.checkpointer import Checkpointer, checkpoint_folder
from lmdev.train.components.data_position import DataPosition
from lmdev.train.components.evaluator import Evaluator
from lmdev.train.components.events import RunEvents
from lmdev.train.components.metric_logger import MetricLogger, Throughput, TrainProgress
from lmdev.train.components.nan_guard import NaNGuard, NaNStop
from lmdev.train.components.optimization import Optimization
from lmdev.train.components.random_state import RandomState, seed_everything
from lmdev.train.config import TrainConfig
from lmdev.train.data import Batches, Data, describe
from lmdev.train.distributed import check_same_config, choose_strategy, shard_model
from lmdev.train.launch import check_global_batch
from lmdev.train.losses import LossFn, correct, make_loss, regularization
from lmdev.train.models import DataShape, add_search_folder, build_model, count_parameters
from lmdev.train.runtime import NO_CONTEXT, autocast, runtime_for
from lmdev.train.signals import SignalLatch

__all__ = ["NaNStop", "SignalLatch", "StepOutput", "TrainProgress", "TrainResult", "Trainer"]


@dataclass
class StepOutput:
    """What one step's forward passes measured on this rank: the loss summed over its examples
    (a Python float on the CPU, a device tensor elsewhere), and the correct predictions among
    ``checked`` examples (0 when accuracy is not read this step)."""

    loss_sum: Any
    examples: int
    n_correct: Any = 0.0
    checked: int = 0


@dataclass
class TrainResult:
    run_id: str | None
    status: str  # finished | diverged (the final loss or weights are not finite) | killed | failed
    steps: int
    train: dict[str, float] = field(default_factory=dict)
    val: dict[str, float] = field(default_factory=dict)
    checkpoint_dir: str | None = None
    best_checkpoint: str | None = None
    signal: int | None = None  # the signal that stopped a killed run (None: another worker's)
    parameters: int = 0
    device: str = "cpu"
    precision: str = "fp32"
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe: a non-finite metric becomes null, and ``non_finite`` names it and its value
        ("nan", "inf", "-inf"), since JSON has no NaN or Infinity."""
        out = asdict(self)
        non_finite: dict[str, str] = {}
        for part in ("train", "val"):
            for key, value in out[part].items():
                if isinstance(value, float) and not math.isfinite(value):
                    non_finite[key] = str(value)
                    out[part][key] = None
        if not math.isfinite(out["seconds"]):
            out["seconds"] = None
        out["non_finite"] = non_finite
        return out


class Trainer:
    """Train ``config``. ``run`` is a tracking run (``lmdev.track.Run``) or None; checkpoints go to
    ``checkpoint_dir`` (default: the run's folder, else ``./checkpoints``); ``base_dir`` is where
    the config's relative paths and ``module:name`` references are found; ``callbacks`` are
    objects with ``on_eval`` / ``on_checkpoint`` / ``on_resume`` methods (added to the config's)."""

    def __init__(self, config: TrainConfig, *, run: Any = None, checkpoint_dir: str | Path | None = None,
                 base_dir: str | Path | None = None, on_progress: Callable[[TrainProgress], None] | None = None,
                 callbacks: list[Any] | None = None, handle_signals: bool = True) -> None:
        self.config, self.run, self.handle_signals = config, run, handle_signals
        self.started = time.perf_counter()
        folder = checkpoint_folder(checkpoint_dir, run)
        seed_everything(config.seed)
        self.runtime = rt = runtime_for(config.device, config.precision)
        check_same_config(rt.dist, json.dumps(config.model_dump(mode="json"), sort_keys=True))
        self.events = RunEvents(run, rt.dist.rank)
        add_search_folder(base_dir)  # for the config's module:name references
        self.data = load_training_data(config, base_dir, rt.device)
        self.model = build_model(config.model, self.data.shape).to(rt.device)
        self.parameters = count_parameters(self.model)
        self.loss_fn: LossFn = make_loss(config.loss, self.data.shape.task)
        self.regularized = bool(config.regularization.l1 or config.regularization.l2)
        rt.strategy = choose_strategy(config.strategy, rt.dist, self.parameters, rt.device)
        if rt.strategy == "fsdp":
            shard_for_fsdp(self.model, config, rt.precision)
        self.optimization = Optimization(self.model, config, rt.device, rt.precision, sharded=rt.strategy == "fsdp")
        self.position = DataPosition(Batches(len(self.data.train), config.data.batch_size, config.seed))
        self.grad_accum = config.train.grad_accum
        check_global_batch(config.data.batch_size, rt.dist.world, self.grad_accum)
        self.step_model = wrap_model(self.model, rt.strategy, rt.device, rt.dist.local_rank, config.train.compile)
        self.plain = rt.strategy == "single" and rt.precision == "fp32"
        self.nan_guard = NaNGuard(config.train, self.events)
        self.evaluator = Evaluator(self.data, rt, self.loss_fn, config.data.batch_size, config.train.eval_every)
        self.metrics = MetricLogger(rt.dist, rt.device, config.train.log_every,
                                    throughput(config, self.data.shape, self.parameters, peak_flops(rt.device, rt.precision)),
                                    run, on_progress)
        self.callbacks = Callbacks(load_callbacks(config.callbacks) + list(callbacks or []), active=rt.is_main)
        self.checkpointer = Checkpointer(folder, config, self.model, rt, self.events)
        self.checkpointer.parts = {"optimization": self.optimization, "random_state": RandomState(),
                                   "data_position": self.position, "nan_guard": self.nan_guard,
                                   "evaluator": self.evaluator, "metrics": self.metrics}
        self.checkpointer.optimizer = self.optimization.optimizer
        self.checkpointer.best_step = lambda: self.evaluator.best_step
        self.checkpointer.on_saved = lambda step, path: self.callbacks.on_checkpoint(self, step, path)

    # ------------------------------------------------------------------ the loop

    def train(self, resume: str | Path | None = None) -> TrainResult:
        """Train to ``train.max_steps``, from the checkpoint ``resume`` (a checkpoint or a folder of
        them) when given. SIGTERM / SIGINT / SIGHUP save a checkpoint and stop after the step."""
        if resume is not None:
            self.resume(Path(resume))
        check_shapes(self.model, self.data, self.runtime.device)
        self.announce()
        latch = SignalLatch.install() if self.handle_signals else SignalLatch()
        d, max_steps, status = self.runtime.dist, self.config.train.max_steps, "finished"
        self.metrics.start(self.position.step)
        self.model.train()
        try:
            while self.position.step < max_steps:
                step = self.position.step
                out: StepOutput | None = None
                if self.nan_guard.skips_batch(step):
                    self.events.warning(f"step {step}: skipping the batch that made the loss non-finite "
                                        "before the rollback")
                    finite, go_on = None, d.all_true(True, not latch.signals)[1]
                else:
                    try:
                        out = self.train_step(d.shard(self.position.next_batch()), self.reads_accuracy(step + 1))
                    except torch.cuda.OutOfMemoryError:
                        self.halve_micro_batch()
                        continue
                    # every rank must agree to step or to skip (else they would drift apart or hang)
                    # and to stop (a signal to any worker stops them all after this step, so the
                    # checkpoint holds exactly the state of an uninterrupted run)
                    finite, go_on = d.all_true(is_finite(out.loss_sum), not latch.signals)
                if finite and out is not None:
                    self.optimization.update()
                    self.metrics.add(out.loss_sum, out.examples, out.n_correct, out.checked)
                self.optimization.zero_grad()
                if finite is False and self.nan_guard.decide(step) == "rollback":
                    self.roll_back(step)
                    continue
                self.optimization.advance_schedule()
                self.position.advance()
                self.after_step(step + 1)
                if not go_on and step + 1 < max_steps:
                    status = "killed"
                    break
            if status == "killed":
                self.stop_on_signal(latch.signals)
        except BaseException as exc:
            if not isinstance(exc, LmdevError):  # say which rank failed where, then let it propagate
                what = f"failed at step {self.position.step}: {type(exc).__name__}: {exc}"
                self.events.event(what.splitlines()[0][:500], "error")
            raise
        finally:
            latch.restore()
            d.close()
        return self.result(status, latch.signals)

    def after_step(self, step: int) -> None:
        """Log, evaluate, checkpoint and report progress, each when it is due."""
        max_steps = self.config.train.max_steps
        if self.metrics.due(step, max_steps):
            self.metrics.log_training(step, self.optimization.lr)
        new_best = False
        if self.evaluator.due(step, max_steps):
            val = self.evaluator.evaluate(self.model)
            self.metrics.log_validation(step, val)
            new_best = self.evaluator.record(val, step)
            self.callbacks.on_eval(self, step, val)
        if self.checkpointer.due(step, new_best):
            self.checkpointer.save(step)
        self.metrics.progress(step, max_steps)

    # ------------------------------------------------------------------ one step (subclass points)

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The loss of one micro-batch and the model's output (for accuracy): override it for
        several losses or auxiliary terms. Runs under autocast; regularization is added after."""
        out = self.step_model(x)
        return self.loss_fn(out, y), out

    def train_step(self, idx: torch.Tensor, count_correct: bool) -> StepOutput:
        """Forward and backward over this rank's share ``idx`` of the global batch, in
        ``grad_accum`` micro-batches (DDP synchronises the gradients on the last one only). The
        trainer then checks the loss, applies the update (``self.optimization``) and zeroes the
        gradients. Override it for a step of another shape; return the summed loss."""
        rt = self.runtime
        host = rt.device.type == "cpu"  # there a scalar read is free: plain floats
        loss_sum: Any = 0.0 if host else torch.zeros((), device=rt.device)
        n_correct: Any = 0.0 if host else torch.zeros((), device=rt.device)
        n = idx.shape[0]  # (len() of a tensor costs microseconds: this runs every step)
        parts = (idx,) if self.grad_accum == 1 else idx.chunk(self.grad_accum)
        for i, part in enumerate(parts):
            x, y = self.data.train.batch(part)
            if not host:
                x, y = to_device(x, y, rt.device)
            m = part.shape[0]
            if self.plain:  # one worker in fp32: no context to enter (this runs every step)
                loss, out = self.compute_loss(x, y)
                self.optimization.backward(self.add_regularization(loss, len(parts), m / n))
            else:
                with self.gradient_sync(last=i == len(parts) - 1):  # the backward too: DDP's no_sync
                    with autocast(rt.device, rt.precision):
                        loss, out = self.compute_loss(x, y)
                    self.optimization.backward(self.add_regularization(loss, len(parts), m / n))
            loss_sum += loss.item() * m if host else loss.detach().float() * m
            if count_correct:
                right = correct(out.detach(), y)
                n_correct += right.item() if host else right
        return StepOutput(loss_sum, n, n_correct, n if count_correct else 0)

    def add_regularization(self, loss: torch.Tensor, micro_batches: int, weight: float) -> torch.Tensor:
        """The micro-batch's share of the step's loss, with the l1 / l2 terms."""
        total = loss if micro_batches == 1 else loss * weight
        if self.regularized:
            reg = regularization(self.model, self.config.regularization)
            total = total + reg * weight if reg is not None else total
        return total

    def gradient_sync(self, last: bool) -> Any:
        """DDP and FSDP reduce the gradients on the last micro-batch of a step only."""
        if self.runtime.strategy == "fsdp":
            self.model.set_requires_gradient_sync(last)  # type: ignore[operator]  # a method fully_shard adds
        if self.runtime.strategy == "ddp" and not last:
            return self.step_model.no_sync()
        return NO_CONTEXT

    def reads_accuracy(self, step: int) -> bool:
        """Training accuracy is read on the batch of each logging step only (the argmax costs as
        much as a small model's step)."""
        return self.data.shape.task == "classification" and self.metrics.due(step, self.config.train.max_steps)

    # ------------------------------------------------------------------ events of a training

    def resume(self, path: Path) -> None:
        found = self.checkpointer.find(path)
        self.checkpointer.apply(found)
        if self.run is not None and self.runtime.is_main:
            self.run.event(f"resumed from {found.path} at step {found.step}")
            self.run.rewind(found.step)  # one run per training: what was logged past the checkpoint is replaced
        self.callbacks.on_resume(self, found.step)

    def roll_back(self, step: int) -> None:
        """Back to the newest checkpoint after a non-finite loss at ``step``."""
        self.runtime.dist.barrier()
        latest = self.checkpointer.latest()
        if latest is None:
            raise NaNStop(f"loss is not finite at step {step} and there is no checkpoint to roll back to",
                          "lower the learning rate, or checkpoint more often")
        self.events.warning(f"non-finite loss at step {step}: rolled back to {latest.path.name}")
        guard = self.nan_guard.state_after_rollback(step)
        self.checkpointer.apply(latest)
        self.nan_guard.load_state_dict(guard)  # the replay is exact: the offending batch is skipped

    def halve_micro_batch(self) -> None:
        """CUDA ran out of memory: the same step again with twice the gradient accumulation."""
        self.optimization.zero_grad()
        torch.cuda.empty_cache()
        batch = self.config.data.batch_size
        if self.runtime.dist.enabled or batch // self.grad_accum <= 1:
            raise LmdevError("CUDA out of memory even with a micro-batch of 1",
                             "use a smaller model, bf16, or activation checkpointing") from None
        self.grad_accum *= 2
        self.events.warning(f"CUDA out of memory: micro-batch halved to {batch // self.grad_accum}, "
                            f"gradient accumulation doubled to {self.grad_accum} (global batch unchanged)")

    def stop_on_signal(self, signals: list[int]) -> None:
        step = self.position.step
        if self.checkpointer.last_saved != step:  # unless this step's checkpoint was just saved
            self.checkpointer.save(step)
        why = f"signal {signals[0]}" if signals else "a signal to another worker"
        self.events.warning(f"stopped by {why}: checkpoint saved at step {step}")

    def announce(self) -> None:
        """The run's config and a line saying where and what it trains."""
        rt = self.runtime
        if self.run is None or not rt.is_main:
            return
        self.run.log_config(self.config.model_dump(mode="json"))
        d = rt.dist
        workers = (f" on {d.world} workers ({d.backend}, {rt.strategy}), {torch.get_num_threads()} thread(s) each "
                   f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                   f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS', 'unset')})" if d.enabled else "")
        self.run.event(f"training on {rt.device} in {rt.precision}{workers}: {self.parameters:,} parameters; "
                       f"data: {describe(self.data)}")

    def result(self, status: str, signals: list[int]) -> TrainResult:
        step, metrics = self.position.step, self.metrics
        if status == "finished":
            bad = diverged(self.model, {**metrics.train, **metrics.val})
            if bad:
                status = "diverged"
                self.events.event(f"diverged: {bad} at step {step}", "error")
        folder, best_step = self.checkpointer.folder, self.evaluator.best_step
        best = folder / f"{ckpt.PREFIX}{best_step:08d}" if best_step is not None else None
        return TrainResult(
            run_id=getattr(self.run, "id", None), status=status, steps=step, train=metrics.train, val=metrics.val,
            checkpoint_dir=str(folder), best_checkpoint=str(best) if best and best.exists() else None,
            signal=signals[0] if status == "killed" and signals else None, parameters=self.parameters,
            device=str(self.runtime.device), precision=self.runtime.precision,
            seconds=time.perf_counter() - self.started)


# --------------------------------------------------------------------------- set-up


def load_training_data(config: TrainConfig, base_dir: str | Path | None, device: torch.device) -> Data:
    from lmdev.train.data import load_data

    data = load_data(config.data, config.seed, Path(base_dir) if base_dir else None)
    if device.type != "cpu":
        place_tables(data, device)
    return data


def place_tables(data: Data, device: torch.device, limit: int = 2 * 1024**3) -> None:
    """Dense tables that fit move to the device once: a batch is then an index on the device."""
    for split in (data.train, data.val):
        if split.x is not None and split.y is not None and split.x.numel() * 4 < limit:
            split.x, split.y = split.x.to(device), split.y.to(device)


def shard_for_fsdp(model: torch.nn.Module, config: TrainConfig, precision: str) -> None:
    if config.regularization.l1 or config.regularization.l2:
        raise LmdevError("regularization.l1 / l2 are not supported with strategy fsdp",
                         "use optimizer.weight_decay, or strategy ddp")
    if precision == "fp16":
        raise LmdevError("precision fp16 is not supported with strategy fsdp", "use bf16 or fp32")
    shard_model(model, precision, config.fsdp.cpu_offload, config.fsdp.reshard_after_forward)


def wrap_model(model: torch.nn.Module, strategy: str, device: torch.device, local_rank: int,
               compile_it: bool) -> Any:
    """What a step calls: the model, inside DistributedDataParallel (ddp) and torch.compile."""
    step_model: Any = model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_model = DDP(model, device_ids=[local_rank] if device.type == "cuda" else None)
    if compile_it:
        step_model = torch.compile(step_model)
    return step_model


def to_device(x: torch.Tensor, y: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    if x.device == device:
        return x, y
    if device.type == "cuda" and not x.is_sparse_csr:  # pinned host memory lets the copy overlap the GPU's work
        x, y = x.pin_memory(), y.pin_memory()
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


def is_finite(loss_sum: Any) -> bool:
    """One scalar read per step (free on the CPU, where it is already a float)."""
    return math.isfinite(loss_sum) if isinstance(loss_sum, float) else bool(torch.isfinite(loss_sum))


def throughput(config: TrainConfig, shape: DataShape, n_params: int, peak: float | None) -> Throughput:
    """Training FLOPs per example: 6 per parameter per token (forward 2, backward 4), plus
    attention's 12·layers·width·sequence per token for the GPT (Kaplan et al. 2020; PaLM's MFU)."""
    from lmdev.train.config import GPTConfig

    if shape.kind != "tokens":
        return Throughput(0, 6.0 * n_params, peak)
    t = shape.input_shape[0]
    per_token = 6.0 * n_params
    if isinstance(config.model, GPTConfig):
        per_token += 12.0 * config.model.n_layer * config.model.n_embd * t
    return Throughput(t, per_token * t, peak)


def peak_flops(device: torch.device, precision: str) -> float | None:
    """The device's dense peak for this precision, from the catalog (None on the CPU or when the
    device is not in the catalog)."""
    if device.type != "cuda":
        return None
    try:
        from lmdev.catalog.gpus import find_gpu

        gpu = find_gpu(torch.cuda.get_device_name(device))
    except Exception:
        return None
    if gpu is None:
        return None
    return gpu.peak({"fp32": "tf32", "bf16": "bf16", "fp16": "fp16"}[precision])


# --------------------------------------------------------------------------- checks


def first_layer(model: torch.nn.Module) -> str:
    """What the model's first layer takes, in words: "the model's first layer is Linear(10 -> 32)"."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            return f"the model's first layer is Linear({m.in_features} -> {m.out_features}), expecting {m.in_features} features"
        if isinstance(m, torch.nn.Conv2d):
            return f"the model's first layer is Conv2d with {m.in_channels} input channel(s)"
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            return f"the model's first layer is an embedding of {m.num_embeddings} entries"
    return "the model's input"


def check_shapes(model: torch.nn.Module, data: Data, device: torch.device) -> None:
    """Run the first batch once (no gradient) so a mismatch is caught with both shapes named."""
    x, y = data.train.batch(torch.arange(min(2, len(data.train))))
    was_training = model.training
    model.eval()  # no dropout: the check must not draw from the RNG (resume stays exact)
    try:
        with torch.no_grad():
            out = model(x.to(device))
    except LmdevError:
        raise
    except (RuntimeError, ValueError, IndexError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise LmdevError(f"the model does not accept the data: {first_layer(model)}, but the data's "
                         f"batches have shape {tuple(x.shape)} ({first})",
                         "make the model's input size match the data's features") from None
    finally:
        model.train(was_training)
    if not isinstance(out, torch.Tensor):
        raise LmdevError(f"the model's forward returned a {type(out).__name__}, not a tensor",
                         "return the output tensor (e.g. the logits) from forward, not a tuple or dict")
    if data.shape.task == "classification" and out.shape[-1] < data.shape.n_outputs:
        raise LmdevError(f"the model outputs {out.shape[-1]} values per example but the data has "
                         f"{data.shape.n_outputs} classes (output shape {tuple(out.shape)}, labels shape {tuple(y.shape)})",
                         "make the last layer's size the number of classes")
    if data.shape.task == "regression" and tuple(out.shape[1:]) != tuple(y.shape[1:]):
        raise LmdevError(f"the model's output shape {tuple(out.shape)} does not match the targets' {tuple(y.shape)}",
                         "make the last layer's size the number of targets")


def diverged(model: torch.nn.Module, metrics: dict[str, float]) -> str | None:
    """What makes a run that reached its last step a diverged one: a non-finite final loss, or
    non-finite weights (this rank's shards under FSDP); None when all is finite."""
    for key in ("train/loss", "val/loss"):
        if key in metrics and not math.isfinite(metrics[key]):
            return f"the final {key} is {metrics[key]}"
    with torch.no_grad():
        for name, p in model.named_parameters():
            local = p.to_local() if hasattr(p, "to_local") else p
            if not bool(torch.isfinite(local).all()):
                return f"the weights {name} are not finite"
    return None
