"""The training loop: ``fit(config)``.

One step draws the global batch, splits it into micro-batches (gradient accumulation), runs
forward and backward under autocast, checks the loss is finite, clips, steps the optimizer and
the schedule. Metrics accumulate on the device and are read only at log and eval intervals.
Checkpoints are atomic; SIGTERM / SIGINT save one and stop cleanly; ``resume`` continues
exactly where a checkpoint left off."""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lmdev.errors import LmdevError
from lmdev.train import checkpoint as ckpt
from lmdev.train.config import TrainConfig
from lmdev.train.data import Batches, Data, describe, load_data
from lmdev.train.launch import check_global_batch, worker_threads
from lmdev.train.distributed import (
    Dist,
    check_same_config,
    choose_strategy,
    from_env,
    shard_model,
)
from lmdev.train.losses import correct, make_loss, regularization
from lmdev.train.models import build_model, count_parameters
from lmdev.train.optim import make_optimizer, make_scheduler


@dataclass
class Progress:
    step: int
    max_steps: int
    metrics: dict[str, float]


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


class NaNStop(LmdevError):
    exit_code = 1


# --------------------------------------------------------------------------- device


def pick_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise LmdevError(f"device {name} requested but CUDA is not available", "use device: auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise LmdevError("device mps requested but MPS is not available", "use device: auto or cpu")
    return torch.device(name)


def pick_precision(name: str, device: torch.device) -> str:
    if name != "auto":
        if name == "fp16" and device.type == "cpu":
            raise LmdevError("precision fp16 is not supported on the CPU", "use bf16 or fp32")
        return name
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"  # the CPU: bf16 only when asked


def _autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager[Any]:
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed % (2**63 - 1))


# --------------------------------------------------------------------------- fit


def _checkpoint_folder(checkpoint_dir: str | Path | None, run: Any) -> Path:
    """Where checkpoints go: ``checkpoint_dir``, else the run's folder; ``./checkpoints`` only
    when there is no run at all. A run that is not recorded (its store could not be opened) has
    no folder: refused, rather than sharing ``./checkpoints`` with every other run."""
    if checkpoint_dir:
        return Path(checkpoint_dir)
    if run is None:
        return Path("checkpoints")
    if getattr(run, "dir", None) is None:
        raise LmdevError("the run is not recorded in a store, so it has no folder for its checkpoints",
                         "make the store writable (LMDEV_HOME), or pass checkpoint_dir")
    return Path(run.dir) / "checkpoints"


def fit(
    config: TrainConfig,
    *,
    run: Any = None,
    resume: str | Path | None = None,
    checkpoint_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    handle_signals: bool = True,
) -> TrainResult:
    """Train ``config``. ``run`` is a tracking run (``lmdev.track.Run``) or None; ``resume`` a
    checkpoint folder or a folder of checkpoints; checkpoints go to ``checkpoint_dir`` (default:
    the run's folder, else ``./checkpoints``)."""
    t_start = time.perf_counter()
    folder = _checkpoint_folder(checkpoint_dir, run)
    tc = config.train
    seed_everything(config.seed)
    d = from_env(config.device)
    device = torch.device("cuda", d.local_rank) if d.backend == "nccl" else (
        torch.device("cpu") if d.enabled else pick_device(config.device))
    precision = pick_precision(config.precision, device)
    check_same_config(d, json.dumps(config.model_dump(mode="json"), sort_keys=True))
    if d.enabled:  # the launcher's share of the cores (torch reads OMP_NUM_THREADS too, but say it once)
        threads = worker_threads(os.environ)
        if threads is not None and threads != torch.get_num_threads():
            torch.set_num_threads(threads)
    if not d.is_main:
        on_progress = None
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    for folder_on_path in (str(Path(base_dir).resolve()) if base_dir else None, os.getcwd()):
        # for python:module:... in the config; appended, after the standard library and
        # site-packages, so a stray tiktoken.py beside the config cannot replace the real one
        if folder_on_path and folder_on_path not in sys.path:
            sys.path.append(folder_on_path)
    data = load_data(config.data, config.seed, Path(base_dir) if base_dir else None)
    if device.type != "cpu":
        _place_tables(data, device)
    model = build_model(config.model, data.shape).to(device)
    n_params = count_parameters(model)
    flops_per_example = _flops_per_example(model, config, data, n_params)
    peak = _peak_flops(device, precision)
    loss_fn = make_loss(config.loss, data.shape.task)
    strategy = choose_strategy(config.strategy, d, n_params, device)
    if strategy == "fsdp":
        if config.regularization.l1 or config.regularization.l2:
            raise LmdevError("regularization.l1 / l2 are not supported with strategy fsdp",
                             "use optimizer.weight_decay, or strategy ddp")
        if scaler_needed(precision):
            raise LmdevError("precision fp16 is not supported with strategy fsdp", "use bf16 or fp32")
        shard_model(model, precision, config.fsdp.cpu_offload, config.fsdp.reshard_after_forward)
    opt = make_optimizer(model, config.optimizer, device)
    sched = make_scheduler(opt, config.schedule, tc.max_steps)
    scaler = torch.amp.GradScaler(device.type) if scaler_needed(precision) else None
    batches = Batches(len(data.train), config.data.batch_size, config.seed)
    check_global_batch(config.data.batch_size, d.world, tc.grad_accum)
    accum = tc.grad_accum
    step_model: Any = model
    if strategy == "ddp":
        from torch.nn.parallel import DistributedDataParallel as DDP

        step_model = DDP(model, device_ids=[d.local_rank] if device.type == "cuda" else None)
    if tc.compile:
        step_model = torch.compile(step_model)

    state = _LoopState()
    if resume is not None:
        _restore(Path(resume), config, model, opt, sched, scaler, state, run, d)
        if not d.is_main:  # the saved accumulators are the sum over ranks: rank 0 carries them
            state.acc = None
    _check_shapes(model, data, device)

    if run is not None and d.is_main:
        run.log_config(config.model_dump(mode="json"))
        workers = (f" on {d.world} workers ({d.backend}, {strategy}), {torch.get_num_threads()} thread(s) each "
                   f"(OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}, "
                   f"MKL_NUM_THREADS={os.environ.get('MKL_NUM_THREADS', 'unset')})" if d.enabled else "")
        run.event(f"training on {device} in {precision}{workers}: {n_params:,} parameters; data: {describe(data)}")
    if not d.is_main:
        run = _RankEvents(run, d.rank)  # other ranks record events (labelled), never metrics

    latch = SignalLatch.install() if handle_signals else SignalLatch()
    stop_signal = latch.signals
    classification = data.shape.task == "classification"
    tokens_per_example = data.shape.input_shape[0] if data.shape.kind == "tokens" else 0
    acc = _Acc(device, state.acc)
    # a constant schedule without warm-up never changes the learning rate: no need to step it
    schedule_moves = config.schedule.type != "constant" or config.schedule.warmup_steps > 0
    last_log_time, last_log_step = time.perf_counter(), state.step
    last_metrics: dict[str, float] = {}
    val_metrics: dict[str, float] = {}
    status = "finished"
    model.train()
    try:
        step = state.step
        saved_step = -1
        while step < tc.max_steps:
            new_best = False
            idx = d.shard(batches.indices(step))
            finite: bool | None = None  # None: the step's batch is skipped without being run
            # training accuracy is read on the batch of each logging step (the argmax costs as much
            # as a small model's step, so it is not computed on every batch)
            log_step = (step + 1) % tc.log_every == 0 or step + 1 == tc.max_steps
            want_correct = classification and log_step
            if step in state.poisoned:
                _event(run, f"step {step}: skipping the batch that made the loss non-finite before the rollback",
                       "warning")
                go_on = d.all_true(True, not stop_signal)[1]
            else:
                try:
                    loss_sum, n_correct = _forward_backward(step_model, model, data, idx, accum, device, precision,
                                                            loss_fn, config, scaler, want_correct, strategy)
                except torch.cuda.OutOfMemoryError:
                    opt.zero_grad(set_to_none=True)
                    torch.cuda.empty_cache()
                    if d.enabled or config.data.batch_size // accum <= 1:
                        raise LmdevError("CUDA out of memory even with a micro-batch of 1",
                                         "use a smaller model, bf16, or activation checkpointing") from None
                    accum *= 2
                    _event(run, f"CUDA out of memory: micro-batch halved to {config.data.batch_size // accum}, "
                                f"gradient accumulation doubled to {accum} (global batch unchanged)", "warning")
                    continue
                # One scalar read per step (free on the CPU) and, with several workers, one small
                # collective: every rank must agree to step or to skip (else they would drift
                # apart or hang) and to stop (a signal to any worker stops them all after this
                # step, so the checkpoint holds exactly the state of an uninterrupted run).
                finite, go_on = d.all_true(math.isfinite(loss_sum) if acc.host else bool(torch.isfinite(loss_sum)),
                                           not stop_signal)
            if finite:
                _update(model, opt, scaler, config)
                acc.add(loss_sum, len(idx), n_correct, len(idx) if want_correct else 0)
            opt.zero_grad(set_to_none=True)
            if finite is False:
                state.nan_skips += 1
                if tc.nan_policy == "stop":
                    raise NaNStop(f"loss is not finite at step {step}", "lower the learning rate or use nan_policy: skip")
                if tc.nan_policy == "skip" and state.nan_skips <= tc.max_nan_skips:
                    _event(run, f"non-finite loss at step {step}: step skipped ({state.nan_skips}/{tc.max_nan_skips})",
                           "warning")
                else:
                    if state.rollbacks >= tc.max_rollbacks:
                        raise NaNStop(f"loss is not finite at step {step} after {state.rollbacks} rollback(s)",
                                      "lower the learning rate, clip gradients (train.grad_clip) or check the data")
                    d.barrier()
                    latest = ckpt.load_latest(folder, warn=lambda m: _warn(run, m))
                    if latest is None:
                        raise NaNStop(f"loss is not finite at step {step} and there is no checkpoint to roll back to",
                                      "lower the learning rate, or checkpoint more often")
                    _event(run, f"non-finite loss at step {step}: rolled back to {latest.path.name}", "warning")
                    poisoned, rollbacks = state.poisoned | {step}, state.rollbacks + 1
                    _apply_checkpoint(latest, model, opt, sched, scaler, state, d)
                    # the replay is exact, so skip the offending batch when it comes round again
                    state.poisoned, state.rollbacks, state.nan_skips = poisoned, rollbacks, 0
                    step = state.step
                    acc = _Acc(device, state.acc if d.is_main else None)  # the checkpoint's sums
                    continue
            if schedule_moves:
                sched.step()
            step += 1
            state.step = step

            if step % tc.log_every == 0 or step == tc.max_steps:
                now = time.perf_counter()
                loss_total, n, n_right, n_checked = acc.totals(d)  # global-batch values, as one worker logs
                last_metrics = {"train/lr": float(sched.get_last_lr()[0])}
                if n:  # an interval whose every step was skipped has no loss to report
                    last_metrics["train/loss"] = loss_total / n
                if n_checked:
                    last_metrics["train/accuracy"] = n_right / n_checked
                dt = max(now - last_log_time, 1e-9)
                last_metrics["train/samples_per_s"] = n / dt
                last_metrics["train/steps_per_s"] = (step - last_log_step) / dt
                if tokens_per_example:
                    last_metrics["train/tokens_per_s"] = n * tokens_per_example / dt
                if peak:  # model FLOPs utilisation: achieved training FLOP/s over the device's peak
                    last_metrics["train/mfu"] = n * flops_per_example / dt / peak
                if run is not None and d.is_main:
                    run.log(last_metrics, step=step)
                acc.reset()
                last_log_time, last_log_step = now, step
            if step % tc.eval_every == 0 or step == tc.max_steps:
                # FSDP ranks must run the same forwards (they gather parameters together), so each
                # evaluates everything; DDP ranks share the batches out.
                val_metrics = evaluate(model, data, device, precision, loss_fn, config.data.batch_size,
                                       d=d if strategy == "ddp" else None)
                if run is not None and val_metrics and d.is_main:
                    run.log(val_metrics, step=step)
                model.train()
                new_best = _is_new_best(val_metrics, state.best)
                if new_best:
                    state.best, state.best_step = val_metrics["val/loss"], step
            # keep_best: a new best is saved at once, so the best weights are always on disk
            if step % config.checkpoint.every == 0 or step == tc.max_steps or (
                    new_best and config.checkpoint.keep_best):
                _save_all(d, strategy, folder, step, model, opt, sched, scaler, state, config, run, acc)
                saved_step = step
            if on_progress:
                on_progress(Progress(step, tc.max_steps, {**last_metrics, **val_metrics}))
            if not go_on and step < tc.max_steps:
                status = "killed"
                break
        if status == "killed":
            if saved_step != state.step:  # unless this step's checkpoint was just saved
                _save_all(d, strategy, folder, state.step, model, opt, sched, scaler, state, config, run, acc)
            why = f"signal {stop_signal[0]}" if stop_signal else "a signal to another worker"
            _event(run, f"stopped by {why}: checkpoint saved at step {state.step}", "warning")
    except BaseException as exc:
        if not isinstance(exc, LmdevError):  # say which rank failed where, then let it propagate
            _event(run, f"failed at step {state.step}: {type(exc).__name__}: {exc}".splitlines()[0][:500], "error")
        raise
    finally:
        latch.restore()
        d.close()
    if status == "finished":
        bad = _diverged(model, {**last_metrics, **val_metrics})
        if bad:
            status = "diverged"
            _event(run, f"diverged: {bad} at step {state.step}", "error")
    best = folder / f"{ckpt.PREFIX}{state.best_step:08d}" if state.best_step is not None else None
    return TrainResult(
        run_id=getattr(run, "id", None), status=status, steps=state.step, train=last_metrics, val=val_metrics,
        checkpoint_dir=str(folder), best_checkpoint=str(best) if best and best.exists() else None,
        signal=stop_signal[0] if status == "killed" and stop_signal else None, parameters=n_params,
        device=str(device), precision=precision, seconds=time.perf_counter() - t_start,
    )


def _is_new_best(val_metrics: dict[str, float], best: float | None) -> bool:
    """A finite validation loss below the best so far (the first finite one counts)."""
    loss = val_metrics.get("val/loss")
    return loss is not None and math.isfinite(loss) and (best is None or loss < best)


def _diverged(model: torch.nn.Module, metrics: dict[str, float]) -> str | None:
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


def _forward_backward(step_model: Any, model: torch.nn.Module, data: Data, idx: torch.Tensor, accum: int,
                      device: torch.device, precision: str, loss_fn: Any, config: TrainConfig,
                      scaler: Any, want_correct: bool, strategy: str) -> tuple[Any, Any]:
    """Forward and backward over this rank's share of the global batch, in ``accum``
    micro-batches (DDP synchronises the gradients on the last one only). Returns the summed
    loss and (if asked) the correct count: Python floats on the CPU, where reading a scalar is
    free; unsynchronised device tensors elsewhere."""
    host = device.type == "cpu"
    loss_sum: Any = 0.0 if host else torch.zeros((), device=device)
    n_correct: Any = 0.0 if host else torch.zeros((), device=device)
    n = len(idx)
    parts = (idx,) if accum == 1 else idx.chunk(accum)
    for i, part in enumerate(parts):
        x, y = data.train.batch(part)
        if x.device != device:  # pinned host memory lets the copy overlap the GPU's work
            if device.type == "cuda" and not x.is_sparse_csr:
                x, y = x.pin_memory(), y.pin_memory()
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
        last = i == len(parts) - 1
        if strategy == "fsdp":  # reduce-scatter the gradients on the last micro-batch only
            model.set_requires_gradient_sync(last)  # type: ignore[operator]  # a method fully_shard adds
        sync = step_model.no_sync() if strategy == "ddp" and not last else contextlib.nullcontext()
        with sync:
            with _autocast(device, precision):
                out = step_model(x)
                loss = loss_fn(out, y)
            weight = len(part) / n
            total = loss if len(parts) == 1 else loss * weight
            reg = regularization(model, config.regularization)
            if reg is not None:
                total = total + reg * weight
            if scaler is not None:
                scaler.scale(total).backward()
            else:
                total.backward()
        if host:
            loss_sum += loss.item() * len(part)
        else:
            loss_sum += loss.detach().float() * len(part)
        if want_correct:
            right = correct(out.detach(), y)
            n_correct += right.item() if host else right
    return loss_sum, n_correct


class _Acc:
    """Sums between two logs: loss, examples, correct predictions, examples checked for them.
    Python floats (float64) on the CPU; a device tensor elsewhere, so no step waits on the GPU."""

    def __init__(self, device: torch.device, start: list[float] | None = None) -> None:
        self.host = device.type == "cpu"
        self.device = device
        self.reset()
        if start:
            self.add(*start)

    def reset(self) -> None:
        self.values: Any = [0.0, 0.0, 0.0, 0.0] if self.host else torch.zeros(4, device=self.device,
                                                                             dtype=torch.float64)

    def add(self, loss_sum: Any, count: float, n_correct: Any, checked: float) -> None:
        if self.host:
            v = self.values
            v[0] += loss_sum
            v[1] += count
            v[2] += n_correct
            v[3] += checked
        else:
            self.values += torch.stack([torch.as_tensor(loss_sum, device=self.device).double().reshape(()),
                                        torch.tensor(float(count), device=self.device, dtype=torch.float64),
                                        torch.as_tensor(n_correct, device=self.device).double().reshape(()),
                                        torch.tensor(float(checked), device=self.device, dtype=torch.float64)])

    def totals(self, d: Dist) -> list[float]:
        """The sums over every rank (a collective when there are several)."""
        return d.sum_list(self.values if self.host else self.values.tolist())


def _update(model: torch.nn.Module, opt: Any, scaler: Any, config: TrainConfig) -> None:
    """Clip and apply the gradients (unscaling them first under fp16)."""
    if scaler is not None:
        scaler.unscale_(opt)
    if config.train.grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), config.train.grad_clip)
    if scaler is not None:
        scaler.step(opt)
        scaler.update()
    else:
        opt.step()


@torch.no_grad()
def evaluate(model: torch.nn.Module, data: Data, device: torch.device, precision: str, loss_fn: Any,
             batch_size: int, max_batches: int = 200, d: Dist | None = None) -> dict[str, float]:
    """Loss (and accuracy / perplexity) over the validation split; with several workers each
    evaluates every world-th batch and the sums are combined."""
    if len(data.val) == 0:
        return {}
    d = d or Dist()
    model.eval()
    total, right = torch.zeros((), device=device), torch.zeros((), device=device)
    count = torch.zeros((), device=device)
    order = torch.arange(len(data.val), device=data.val.x.device if data.val.x is not None else "cpu")
    for b, part in enumerate(order.split(batch_size)):
        if b >= max_batches:
            break
        if b % d.world != d.rank:
            continue
        x, y = data.val.batch(part)
        x, y = x.to(device), y.to(device)
        with _autocast(device, precision):
            out = model(x)
            loss = loss_fn(out, y)
        total += loss.float() * len(part)
        count += len(part)
        if data.shape.task == "classification":
            right += correct(out, y)
    loss_total, n_right, n = d.sum_list([total.item(), right.item(), count.item()])
    metrics = {"val/loss": loss_total / n}
    if data.shape.task == "classification":
        metrics["val/accuracy"] = n_right / n
    if data.shape.task == "language_modeling":
        metrics["val/perplexity"] = math.exp(min(metrics["val/loss"], 50.0))
    return metrics


def _place_tables(data: Data, device: torch.device, limit: int = 2 * 1024**3) -> None:
    """Dense tables that fit move to the device once: a batch is then an index on the device."""
    for split in (data.train, data.val):
        if split.x is not None and split.y is not None and split.x.numel() * 4 < limit:
            split.x, split.y = split.x.to(device), split.y.to(device)


def _flops_per_example(model: torch.nn.Module, config: TrainConfig, data: Data, n_params: int) -> float:
    """Training FLOPs per example: 6 per parameter per token (forward 2, backward 4), plus
    attention's 12·layers·width·sequence per token for the GPT (Kaplan et al. 2020; PaLM's MFU)."""
    from lmdev.train.config import GPTConfig

    if data.shape.kind == "tokens":
        t = data.shape.input_shape[0]
        per_token = 6.0 * n_params
        if isinstance(config.model, GPTConfig):
            per_token += 12.0 * config.model.n_layer * config.model.n_embd * t
        return per_token * t
    return 6.0 * n_params


def _peak_flops(device: torch.device, precision: str) -> float | None:
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


def _expected_input(model: torch.nn.Module) -> str:
    """What the model's first layer takes, in words: "the model's first layer is Linear(10 -> 32)"."""
    for m in model.modules():
        if isinstance(m, torch.nn.Linear):
            return f"the model's first layer is Linear({m.in_features} -> {m.out_features}), expecting {m.in_features} features"
        if isinstance(m, torch.nn.Conv2d):
            return f"the model's first layer is Conv2d with {m.in_channels} input channel(s)"
        if isinstance(m, (torch.nn.Embedding, torch.nn.EmbeddingBag)):
            return f"the model's first layer is an embedding of {m.num_embeddings} entries"
    return "the model's input"


def _check_shapes(model: Any, data: Data, device: torch.device) -> None:
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
        raise LmdevError(f"the model does not accept the data: {_expected_input(model)}, but the data's "
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


# --------------------------------------------------------------------------- state


@dataclass
class _LoopState:
    step: int = 0
    nan_skips: int = 0
    best: float | None = None
    best_step: int | None = None
    acc: list[float] | None = None  # the metric sums since the last log, saved with a checkpoint
    poisoned: set[int] = field(default_factory=set)  # steps whose batch is skipped after a rollback
    rollbacks: int = 0


def _event(run: Any, message: str, level: str = "info") -> None:
    if run is not None:
        run.event(message, level=level)


def _warn(run: Any, message: str) -> None:
    """Something the user must see (a corrupt checkpoint skipped): a run event and a warning."""
    import warnings

    from lmdev.errors import LmdevWarning

    _event(run, message, "warning")
    warnings.warn(message, LmdevWarning, stacklevel=2)


def _state_payload(opt: Any, sched: Any, scaler: Any, state: _LoopState, config: TrainConfig,
                   step: int) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Everything but the weights: tensors for optimizer.safetensors, the rest for state.json.
    ``opt`` None: the optimizer is saved elsewhere (sharded)."""
    tensors: dict[str, torch.Tensor] = {}
    opt_rest = None
    if opt is not None:
        opt_tensors, opt_rest = ckpt.optimizer_to_flat(opt)
        tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    if state.acc is not None:
        tensors["acc"] = torch.tensor(state.acc, dtype=torch.float64)
    np_state = np.random.get_state()
    payload = {
        "step": step,
        "data_position": step,  # global batches drawn: the order is a function of (seed, position)
        "nan_skips": state.nan_skips,
        "skip_steps": sorted(state.poisoned),
        "rollbacks": state.rollbacks,
        "best": state.best,
        "best_step": state.best_step,
        "optimizer": opt_rest,
        "scheduler": sched.state_dict() | {"lr_lambdas": None},
        "scaler": scaler.state_dict() if scaler is not None else None,
        "rng_python": _jsonable_rng(random.getstate()),
        "rng_numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],  # type: ignore[index]  # numpy's stub types the legacy state as a dict
        "config": config.model_dump(mode="json"),
    }
    return tensors, payload


def _save(folder: Path, step: int, model: torch.nn.Module, opt: Any, sched: Any, scaler: Any,
          state: _LoopState, config: TrainConfig, run: Any) -> None:
    tensors, payload = _state_payload(opt, sched, scaler, state, config, step)
    path, _ = ckpt.save(folder, step, model.state_dict(), tensors, payload)
    _after_save(folder, path, state, config, run, step)


def _after_save(folder: Path, path: Path, state: _LoopState, config: TrainConfig, run: Any, step: int) -> None:
    """Prune old checkpoints (keeping the best) and record the new one's files as artifacts."""
    protect = folder / f"{ckpt.PREFIX}{state.best_step:08d}" if (config.checkpoint.keep_best and state.best_step) else None
    ckpt.prune(folder, config.checkpoint.keep, protect)
    if run is not None:
        run.event(f"checkpoint saved at step {step}", level="info")
        for f in sorted(path.glob("*.safetensors")):
            run.log_artifact(f, kind="checkpoint")
        if ckpt.is_sharded(path):
            run.log_artifact(path / "manifest.json", kind="checkpoint")


def _save_all(d: Dist, strategy: str, folder: Path, step: int, model: torch.nn.Module, opt: Any, sched: Any,
              scaler: Any, state: _LoopState, config: TrainConfig, run: Any, acc: _Acc) -> None:
    """Rank 0 writes the checkpoint (DDP keeps every rank's state identical) while the others
    wait; under FSDP every rank writes its shards. Metric accumulators are saved as their sum
    over ranks."""
    state.acc = acc.totals(d)
    if strategy == "fsdp":
        tensors, payload = _state_payload(None, sched, scaler, state, config, step)
        path = ckpt.save_sharded(folder, step, model, opt, tensors, payload, d.is_main, d.barrier)
        if d.is_main:
            _after_save(folder, path, state, config, run, step)
        return
    if d.is_main:
        _save(folder, step, model, opt, sched, scaler, state, config, run)
    d.barrier()


class _RankEvents:
    """What ranks other than 0 see of the run: their events, labelled with their rank."""

    def __init__(self, run: Any, rank: int) -> None:
        self._run, self._rank = run, rank
        self.id = getattr(run, "id", None)
        self.dir = getattr(run, "dir", None)

    def event(self, message: str, level: str = "info") -> None:
        if self._run is not None:
            self._run.event(f"[rank {self._rank}] {message}", level=level)


def _jsonable_rng(state: tuple[Any, ...]) -> list[Any]:
    version, internal, gauss = state
    return [version, list(internal), gauss]


def _restore(path: Path, config: TrainConfig, model: torch.nn.Module, opt: Any, sched: Any, scaler: Any,
             state: _LoopState, run: Any, d: Dist) -> None:
    if not path.exists():
        raise LmdevError(f"nothing to resume at {path}", "give a run id, a run's checkpoints folder or a checkpoint")
    def warn(message: str) -> None:
        if d.is_main:
            _warn(run, message)

    if (path / "manifest.json").exists():  # one checkpoint: it, or the newest valid one before it
        problem = ckpt.verify(path)
        found = ckpt.load(path, check=False) if problem is None else None
        if problem is not None:
            warn(f"checkpoint {path.name} is corrupt ({problem}); using the one before it")
            step = int(path.name[len(ckpt.PREFIX):]) if path.name[len(ckpt.PREFIX):].isdigit() else None
            found = ckpt.load_latest(path.parent, warn, before=step)
    else:
        found = ckpt.load_latest(path, warn)
    if found is None:
        raise LmdevError(f"no complete checkpoint under {path}", "the run saved none before it stopped")
    old_model = (found.state.get("config") or {}).get("model") if isinstance(found.state.get("config"), dict) else None
    if not isinstance(old_model, dict):
        raise LmdevError(f"cannot resume {found.path}: its state.json has no model config",
                         "resume from another checkpoint, or start a new run")
    new_model = config.model.model_dump(mode="json")
    if old_model != new_model:
        diff = "; ".join(f"model.{k}: {old_model.get(k)!r} -> {new_model.get(k)!r}"
                         for k in sorted(set(old_model) | set(new_model)) if old_model.get(k) != new_model.get(k))
        raise LmdevError(f"cannot resume {found.path}: the model config changed ({diff})",
                         "resume with the original model settings, or start a new run")
    _apply_checkpoint(found, model, opt, sched, scaler, state, d)
    if run is not None and d.is_main:
        run.event(f"resumed from {found.path} at step {found.step}")
        run.rewind(found.step)  # one run per training: what was logged past the checkpoint is replaced


def _apply_checkpoint(found: ckpt.Checkpoint, model: torch.nn.Module, opt: Any, sched: Any, scaler: Any,
                      state: _LoopState, d: Dist | None = None) -> None:
    if ckpt.is_sharded(found.path):  # torch.distributed.checkpoint reshards to this world size
        ckpt.load_sharded_into(found.path, model, opt)
    elif _is_fsdp(model):
        raise LmdevError(f"{found.path} was saved without FSDP and cannot be loaded into a sharded model",
                         "resume it with strategy: ddp (or on one worker)")
    else:
        device = next(model.parameters()).device
        configured = [{k: v for k, v in g.items() if k != "params"} for g in opt.param_groups]
        model.load_state_dict({k: v.to(device) for k, v in found.weights.items()})
        ckpt.optimizer_from_flat(opt, {k: v.to(device) if not k.endswith(".step") else v
                                       for k, v in found.tensors.items()}, found.state["optimizer"])
    sched_state = dict(found.state["scheduler"])
    sched_state.pop("lr_lambdas", None)
    sched.load_state_dict({**sched.state_dict(), **sched_state, "lr_lambdas": [None]})
    if not ckpt.is_sharded(found.path):
        _configured_hyperparameters(opt, sched, configured)
    if scaler is not None and found.state.get("scaler"):
        scaler.load_state_dict(found.state["scaler"])
    torch.set_rng_state(found.tensors["rng.torch"])
    cuda_states = [found.tensors[k] for k in sorted(found.tensors) if k.startswith("rng.cuda.")]
    if cuda_states and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda_states)
    py = found.state["rng_python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    npst = found.state["rng_numpy"]
    np.random.set_state((npst[0], np.array(npst[1], dtype=np.uint32), *npst[2:]))
    state.step = found.step
    state.nan_skips = found.state.get("nan_skips", 0)
    state.poisoned = set(found.state.get("skip_steps", []))
    state.rollbacks = found.state.get("rollbacks", 0)
    state.best, state.best_step = found.state.get("best"), found.state.get("best_step")
    state.acc = found.tensors["acc"].tolist() if "acc" in found.tensors else None


def _configured_hyperparameters(opt: Any, sched: Any, configured: list[dict[str, Any]]) -> None:
    """A fork (``lmdev train --fork``) may change the optimizer's hyper-parameters: the restored
    moments are kept, the learning rate, betas, weight decay... are this config's. When nothing
    changed the optimizer is left exactly as restored (a resume stays bit for bit)."""
    if all({k: v for k, v in g.items() if k != "params"} == new for g, new in zip(opt.param_groups, configured)):
        return
    for group, new in zip(opt.param_groups, configured):
        base = new.get("initial_lr", new.get("lr"))
        group.update({k: v for k, v in new.items() if k not in ("lr", "initial_lr")})
        group["initial_lr"] = base
    sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]
    for group, base, fn in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
        group["lr"] = base * fn(sched.last_epoch) if callable(fn) else group["lr"]


def _is_fsdp(model: torch.nn.Module) -> bool:
    return hasattr(model, "set_requires_gradient_sync")


def scaler_needed(precision: str) -> bool:
    return precision == "fp16"


STOP_SIGNALS = tuple(getattr(signal, n) for n in ("SIGTERM", "SIGINT", "SIGHUP") if hasattr(signal, n))


class SignalLatch:
    """SIGTERM, SIGINT and SIGHUP only set a flag (``signals``): the loop saves a checkpoint at
    the end of the step and stops. A second signal while that save (or the run's final record)
    is written is noted too, never an exit mid-save.

    ``install()`` while another latch is installed (the session's, around ``fit`` and the run's
    final record) returns that one: a signal that came during set-up is seen by the loop."""

    def __init__(self) -> None:
        self.signals: list[int] = []
        self._previous: dict[int, Any] = {}

    def __call__(self, signum: int, frame: Any) -> None:
        self.signals.append(signum)

    @classmethod
    def install(cls) -> SignalLatch:
        import threading

        latch = cls()
        if threading.current_thread() is not threading.main_thread():
            return latch
        outer = signal.getsignal(signal.SIGTERM)
        if isinstance(outer, SignalLatch):
            return outer  # its owner restores it
        for sig in STOP_SIGNALS:
            latch._previous[sig] = signal.getsignal(sig)
            signal.signal(sig, latch)
        return latch

    def restore(self) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
