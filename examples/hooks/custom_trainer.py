"""Custom training steps by subclassing lmdev's Trainer.

``AuxLossTrainer`` overrides ``compute_loss`` (one micro-batch's loss) to add a second loss
term; ``CriticTrainer`` overrides ``train_step`` (a whole step) for a GAN-like update with two
optimizers: a critic learns to tell the model's predicted distributions from the true one-hot
labels, and the model is trained on cross-entropy plus fooling the critic. The trainer still
checks the loss, applies the model's update, logs, evaluates, checkpoints (the critic too, via
``ExtraModel``) and resumes exactly.

    python examples/hooks/custom_trainer.py [--steps N] [--out FOLDER]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from lmdev.train.components.optimization import ExtraModel
from lmdev.train.config import load_config
from lmdev.train.losses import correct
from lmdev.train.trainer import StepOutput, Trainer

CONFIG = {
    "name": "digits-custom-step", "seed": 0,
    "model": {"type": "mlp", "hidden": [32]},
    "data": {"type": "digits", "batch_size": 64, "val_fraction": 0.2},
    "optimizer": {"type": "adamw", "lr": 3e-3},
    "train": {"max_steps": 60, "eval_every": 20, "log_every": 10},
    "checkpoint": {"every": 20, "keep": 5},
    "device": "cpu",
}


class AuxLossTrainer(Trainer):
    """Two losses: the config's loss plus a small penalty on the logits' size."""

    def compute_loss(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.step_model(x)
        return self.loss_fn(out, y) + 1e-3 * out.pow(2).mean(), out


class CriticTrainer(Trainer):
    """A second network with its own optimizer, updated inside the step."""

    def __init__(self, config: Any, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        classes = self.data.shape.n_outputs
        self.critic = torch.nn.Sequential(torch.nn.Linear(classes, 16), torch.nn.ReLU(), torch.nn.Linear(16, 1))
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=1e-3)
        self.checkpointer.parts["critic"] = ExtraModel("critic", self.critic, self.critic_opt)

    def train_step(self, idx: torch.Tensor, count_correct: bool) -> StepOutput:
        x, y = self.data.train.batch(idx)
        out = self.step_model(x)
        fake, real = out.softmax(-1), F.one_hot(y, out.shape[-1]).float()
        ones, zeros = torch.ones(len(idx), 1), torch.zeros(len(idx), 1)
        # the critic's step: real labels -> 1, the model's predictions -> 0
        critic_loss = (F.binary_cross_entropy_with_logits(self.critic(real), ones)
                       + F.binary_cross_entropy_with_logits(self.critic(fake.detach()), zeros))
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()
        # the model's loss; the trainer checks it is finite and applies the update
        loss = self.loss_fn(out, y) + 0.1 * F.binary_cross_entropy_with_logits(self.critic(fake), ones)
        self.optimization.backward(loss)
        right = float(correct(out.detach(), y)) if count_correct else 0.0
        return StepOutput(loss.item() * len(idx), len(idx), right, len(idx) if count_correct else 0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="custom training steps by subclassing Trainer")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None, help="checkpoints go here (default: a temporary folder)")
    args = parser.parse_args(argv)
    config = load_config(CONFIG, [f"train.max_steps={args.steps}"])
    with tempfile.TemporaryDirectory(prefix="lmdev-custom-") as tmp:
        out = args.out or Path(tmp)
        for cls in (AuxLossTrainer, CriticTrainer):
            result = cls(config, checkpoint_dir=out / cls.__name__).train()
            print(f"{cls.__name__}: {result.status} after {result.steps} steps, "
                  f"val/loss {result.val['val/loss']:.4f}, val/accuracy {result.val['val/accuracy']:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
