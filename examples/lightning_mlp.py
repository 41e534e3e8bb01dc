"""The founding document's PyTorch Lightning example (section 4.2), written so that it runs.

A LightningModule with Linear layers to 128, 64 and 10 and ReLU between them, trained with
cross-entropy on the logits and Adam (lr 1e-3), on the handwritten digits that ship with
scikit-learn (8x8 pixels = 64 features, 10 classes; nothing is downloaded). It reaches about
97% validation accuracy, logged as ``val/accuracy``.

Record it as a run either way:
    lmdev run examples/lightning_mlp.py            # the script as it is
    python examples/lightning_mlp.py --autolog     # the script calls lmdev.autolog()

The published version applied softmax before CrossEntropyLoss (which expects logits) and passed
the labels as a separate ``fit`` argument; here the model returns logits and the data loaders
yield (features, label) batches.
"""

from __future__ import annotations

import argparse
import tempfile
import warnings


def loaders(batch_size: int, seed: int = 0):
    import torch
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split
    from torch.utils.data import DataLoader, TensorDataset

    digits = load_digits()
    x = torch.tensor(digits.data / 16.0, dtype=torch.float32)  # pixel intensities 0..16 -> 0..1
    y = torch.tensor(digits.target, dtype=torch.long)
    x_train, x_val, y_train, y_val = train_test_split(x, y, test_size=0.2, random_state=seed,
                                                      stratify=y)
    train = DataLoader(TensorDataset(x_train, y_train), batch_size=batch_size, shuffle=True)
    val = DataLoader(TensorDataset(x_val, y_val), batch_size=256)
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--autolog", action="store_true", help="record the run with lmdev.autolog()")
    args = parser.parse_args()
    if args.autolog:
        import lmdev

        lmdev.autolog()

    import lightning.pytorch as pl
    import torch
    from torch import nn

    warnings.filterwarnings("ignore", ".*does not have many workers.*")

    class Model(pl.LightningModule):
        def __init__(self, lr: float = 1e-3) -> None:
            super().__init__()
            self.save_hyperparameters()
            self.net = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 64), nn.ReLU(),
                                     nn.Linear(64, 10))
            self.loss = nn.CrossEntropyLoss()

        def forward(self, x):
            return self.net(x)  # logits: CrossEntropyLoss applies log-softmax itself

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = self.loss(self(x), y)
            self.log("train/loss", loss)
            return loss

        def validation_step(self, batch, batch_idx):
            x, y = batch
            logits = self(x)
            self.log("val/loss", self.loss(logits, y))
            self.log("val/accuracy", (logits.argmax(dim=1) == y).float().mean(), prog_bar=True)

        def configure_optimizers(self):
            return torch.optim.Adam(self.parameters(), lr=self.hparams.lr)

    # A model this small trains fastest on one thread; on a busy 2-core machine torch's thread
    # pool was measured ~100x slower per step (threads waiting on each other).
    torch.set_num_threads(1)
    pl.seed_everything(0, verbose=False)
    train, val = loaders(args.batch_size)
    model = Model()
    # Lightning's own logger writes lightning_logs/ under default_root_dir (the current folder by
    # default): a temporary folder keeps the caller's folder clean, and lmdev's logger (added by
    # `lmdev run` / autolog) still records the run.
    with tempfile.TemporaryDirectory(prefix="lightning-") as scratch:
        trainer = pl.Trainer(max_epochs=args.epochs, accelerator="cpu", devices=1, log_every_n_steps=10,
                             enable_checkpointing=False, enable_model_summary=False,
                             enable_progress_bar=False, default_root_dir=scratch)
        trainer.fit(model, train, val)
    print(f"val/accuracy {trainer.callback_metrics['val/accuracy'].item():.4f}")


if __name__ == "__main__":
    main()
