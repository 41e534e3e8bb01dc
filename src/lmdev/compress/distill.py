"""Knowledge distillation: a smaller student trained on the teacher's softened outputs.

The student comes from shrinking the teacher (MLP: hidden widths halved; GPT: half the width and
half the layers). The KD loss is ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``;
T and alpha are chosen by a short search on a held-out part of the training split (textbook
defaults often lose to plain training). The same student trained without the teacher (alpha 0, the
"twin") is measured beside it: a gain is reported only when the student beats its twin on the
evaluation data."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmdev.compress import measure as ms
from lmdev.compress.finetune import default_steps, finetune
from lmdev.compress.source import ModelSpec, Source
from lmdev.compress.variant import TorchRunner, Variant, module_bytes
from lmdev.errors import LmdevError

GRID = [(1.0, 0.5), (2.0, 0.5), (4.0, 0.5), (2.0, 0.9), (4.0, 0.7)]  # (temperature, alpha)


@dataclass
class Trial:
    temperature: float
    alpha: float
    held_out: float  # the task metric on the held-out part (accuracy: higher is better; else lower)


def student_spec(spec: ModelSpec) -> ModelSpec:
    cfg = dict(spec.config)
    if spec.kind != "lmdev" or cfg.get("type") not in ("mlp", "gpt"):
        raise LmdevError("distillation shrinks lmdev mlp and gpt models", "quantise other models instead")
    if cfg["type"] == "mlp":
        cfg["hidden"] = [max(1, h // 2) for h in cfg.get("hidden", [128, 64])]
    else:
        heads = int(cfg.get("n_head", 4))
        kv = int(cfg.get("n_kv_head") or heads)
        step = 2 * heads  # keep n_embd / n_head an even integer (rope)
        cfg["n_embd"] = max(step, int(cfg.get("n_embd", 128)) // 2 // step * step)
        cfg["n_layer"] = max(1, int(cfg.get("n_layer", 4)) // 2)
        cfg["n_kv_head"] = kv
        cfg["ffn_hidden"] = None
    return ModelSpec(spec.kind, cfg, spec.shape)


def split_holdout(split: Any, fraction: float = 0.1) -> tuple[Any, Any]:
    """The training split cut in two: (fit, held out), by position (tables were shuffled when loaded)."""
    from lmdev.train.data import Split

    if split.tokens is not None:
        cut = int(len(split.tokens) * (1 - fraction))
        return Split(tokens=split.tokens[:cut], seq_len=split.seq_len), Split(tokens=split.tokens[cut:],
                                                                              seq_len=split.seq_len)
    n = len(split)
    cut = max(1, int(n * (1 - fraction)))
    return Split(split.x[:cut], split.y[:cut]), Split(split.x[cut:], split.y[cut:])


def kd_loss(teacher: nn.Module, temperature: float, alpha: float, task: str) -> Any:
    def loss(out: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t = teacher(x)
        s2, t2 = out.reshape(-1, out.shape[-1]), t.reshape(-1, t.shape[-1])
        ce = F.cross_entropy(s2, y.reshape(-1))
        kl = F.kl_div(F.log_softmax(s2 / temperature, -1), F.log_softmax(t2 / temperature, -1),
                      log_target=True, reduction="batchmean")
        return alpha * temperature**2 * kl + (1 - alpha) * ce
    return loss


def _score(model: nn.Module, split: Any, task: str) -> float:
    xs, ys = split.batch(torch.arange(min(len(split), 512)))
    q, _ = ms.evaluate(TorchRunner(model), ms.EvalSet([(xs, ys)], task, []))
    return float(q.value if q.value is not None else float("nan"))


def _train_student(source: Source, spec: ModelSpec, steps: int, fit: Any, teacher: nn.Module,
                   temperature: float, alpha: float) -> nn.Module:
    torch.manual_seed(source.train_config.seed)
    student = spec.build()
    hook = kd_loss(teacher, temperature, alpha, source.task) if alpha > 0 else None
    finetune(student, source, steps, loss_hook=hook, train_split=fit)
    return student


def check(source: Source) -> None:
    """Raise LmdevError when ``source`` cannot be distilled (before any work)."""
    if source.train_config is None or source.data is None or len(source.data.train) == 0:
        raise LmdevError("distillation needs training data, and this source has none",
                         "give a run or a checkpoint of lmdev train: its config names the data")
    if source.task not in ("classification", "language_modeling"):
        raise LmdevError(f"distillation needs class or token outputs; the task is {source.task}")
    student_spec(source.spec)


def distill_variant(source: Source, steps: int | None) -> Variant:
    check(source)
    spec = student_spec(source.spec)
    n = steps if steps is not None else default_steps(source)
    fit, held = split_holdout(source.data.train)
    teacher = copy.deepcopy(source.model).eval()
    better = max if source.task == "classification" else min
    twin = _train_student(source, spec, n, fit, teacher, 1.0, 0.0)
    trials, models = [Trial(1.0, 0.0, _score(twin, held, source.task))], [twin]
    for temperature, alpha in GRID:
        models.append(_train_student(source, spec, n, fit, teacher, temperature, alpha))
        trials.append(Trial(temperature, alpha, _score(models[-1], held, source.task)))
    chosen = _best(trials, better)
    best_model = models[trials.index(chosen)]
    ev = ms.make_eval_set(source)
    twin_eval = ms.evaluate(TorchRunner(twin), ev)[0].value
    student_eval = ms.evaluate(TorchRunner(best_model), ev)[0].value
    gain = chosen.alpha > 0 and twin_eval is not None and student_eval is not None and \
        better(student_eval, twin_eval) == student_eval and student_eval != twin_eval
    verdict = "distillation helped: the student beats its plainly trained twin" if gain else \
        "no gain: the student does not beat its plainly trained twin"
    search = {"metric": "accuracy" if source.task == "classification" else "perplexity", "steps": n,
              "search": [t.__dict__ for t in trials], "chosen": chosen.__dict__, "twin_eval": twin_eval,
              "student_eval": student_eval, "gain": gain, "verdict": verdict}
    best_model.eval()
    from lmdev.compress import formats

    return Variant("distilled student", "distill", "distilled", TorchRunner(best_model),
                   lambda f: formats.write_torch(best_model, f), spec,
                   {"temperature": chosen.temperature, "alpha": chosen.alpha, "steps": n, "gain": gain,
                    "student": spec.config, "search_report": search}, best_model, module_bytes(best_model),
                   notes=[verdict])


def _best(trials: list[Trial], better: Any) -> Trial:
    pick = trials[0]
    for t in trials[1:]:
        if better(t.held_out, pick.held_out) == t.held_out and t.held_out != pick.held_out:
            pick = t
    return pick
