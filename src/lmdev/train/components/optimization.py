"""The optimizer, its learning-rate schedule, fp16's gradient scaler and gradient clipping: what
turns gradients into an update."""

from __future__ import annotations

from typing import Any

import torch

from lmdev.train import checkpoint as ckpt
from lmdev.train.config import TrainConfig
from lmdev.train.optim import make_optimizer, make_scheduler


class Optimization:
    def __init__(self, model: torch.nn.Module, config: TrainConfig, device: torch.device, precision: str,
                 sharded: bool = False) -> None:
        self.optimizer = make_optimizer(model, config.optimizer, device)
        self.scheduler = make_scheduler(self.optimizer, config.schedule, config.train.max_steps)
        self.scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
        self.model, self.device, self.grad_clip = model, device, config.train.grad_clip
        # a constant schedule without warm-up never changes the learning rate: no need to step it
        self.schedule_moves = config.schedule.type != "constant" or config.schedule.warmup_steps > 0
        self.sharded = sharded  # FSDP: the optimizer's state is saved with the model's shards

    def backward(self, loss: torch.Tensor) -> None:
        torch.autograd.backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def update(self) -> None:
        """Clip and apply the gradients (unscaling them first under fp16)."""
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.grad_clip:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.grad_clip)
        if self.scaler is not None:
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self.optimizer.step()

    def zero_grad(self) -> None:
        self.optimizer.zero_grad(set_to_none=True)

    def advance_schedule(self) -> None:
        if self.schedule_moves:
            self.scheduler.step()

    @property
    def lr(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {"optimizer": None}
        if not self.sharded:
            tensors, state["optimizer"] = ckpt.optimizer_to_flat(self.optimizer)
            state.update(tensors)
        state["scheduler"] = self.scheduler.state_dict() | {"lr_lambdas": None}  # a lambda is code, not state
        state["scaler"] = self.scaler.state_dict() if self.scaler is not None else None
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """A sharded checkpoint's optimizer was loaded with the weights (its ``optimizer`` is null)."""
        configured = [{k: v for k, v in g.items() if k != "params"} for g in self.optimizer.param_groups]
        if state.get("optimizer") is not None:
            tensors = {k: v.to(self.device) if not k.endswith(".step") else v
                       for k, v in state.items() if k.startswith("optim.")}
            ckpt.optimizer_from_flat(self.optimizer, tensors, state["optimizer"])
        saved = dict(state["scheduler"])
        saved.pop("lr_lambdas", None)
        self.scheduler.load_state_dict({**self.scheduler.state_dict(), **saved, "lr_lambdas": [None]})
        if state.get("optimizer") is not None:
            self.keep_configured_hyperparameters(configured)
        if self.scaler is not None and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])

    def keep_configured_hyperparameters(self, configured: list[dict[str, Any]]) -> None:
        """A fork (``lmdev train --fork``) may change the optimizer's hyper-parameters: the restored
        moments are kept, the learning rate, betas, weight decay... are this config's. When nothing
        changed the optimizer is left exactly as restored (a resume stays bit for bit)."""
        opt, sched = self.optimizer, self.scheduler
        if all({k: v for k, v in g.items() if k != "params"} == new for g, new in zip(opt.param_groups, configured)):
            return
        for group, new in zip(opt.param_groups, configured):
            base = new.get("initial_lr", new.get("lr"))
            group.update({k: v for k, v in new.items() if k not in ("lr", "initial_lr")})
            group["initial_lr"] = base
        sched.base_lrs = [g.get("initial_lr", g["lr"]) for g in opt.param_groups]
        for group, base, fn in zip(opt.param_groups, sched.base_lrs, sched.lr_lambdas):
            group["lr"] = base * fn(sched.last_epoch) if callable(fn) else group["lr"]


class ExtraModel:
    """Another module trained by its own optimizer inside a custom step (a GAN's critic, a
    reward model): its weights and optimizer state go into the checkpoint under ``name.``, so
    a resume continues it exactly. Register it as ``trainer.checkpointer.parts[name]``."""

    def __init__(self, name: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
        self.name, self.module, self.optimizer = name, module, optimizer

    def state_dict(self) -> dict[str, Any]:
        state: dict[str, Any] = {f"{self.name}.weights.{k}": v for k, v in self.module.state_dict().items()}
        tensors, rest = ckpt.optimizer_to_flat(self.optimizer)
        state.update({f"{self.name}.{k}": v for k, v in tensors.items()})
        state[f"{self.name}.optimizer"] = rest
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights, prefix = f"{self.name}.weights.", f"{self.name}.optim."
        self.module.load_state_dict({k[len(weights):]: v for k, v in state.items() if k.startswith(weights)})
        tensors = {k[len(self.name) + 1:]: v for k, v in state.items() if k.startswith(prefix)}
        ckpt.optimizer_from_flat(self.optimizer, tensors, state[f"{self.name}.optimizer"])
