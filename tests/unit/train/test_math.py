"""The math of the engine against closed form: optimizer steps, losses, regularisation, schedules.

Every expected number here is worked out by hand (in the comments) rather than by calling the
same torch function the engine calls."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from lmdev.train.config import (
    GPTConfig,
    LossConfig,
    OptimizerConfig,
    RegularizationConfig,
    ScheduleConfig,
)
from lmdev.train.losses import make_loss, regularization
from lmdev.train.models import GPT
from lmdev.train.optim import lr_factor, make_optimizer, make_scheduler

CPU = torch.device("cpu")


class Scalar(nn.Module):
    """J(θ) = θ²/2, so ∇J = θ: the simplest problem to step by hand."""

    def __init__(self, theta: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(torch.tensor([theta], dtype=torch.float64))

    def loss(self) -> torch.Tensor:
        return 0.5 * (self.theta ** 2).sum()


def _step(model: Scalar, opt: torch.optim.Optimizer) -> None:
    opt.zero_grad()
    model.loss().backward()
    opt.step()


# --------------------------------------------------------------------------- optimizers


def test_one_sgd_step_is_theta_minus_alpha_grad_exactly() -> None:
    # y = w·x + b on two examples, mse loss:
    #   x1 = (1, 2), y1 = 1;  x2 = (3, -1), y2 = 0;  w = (0.5, -1), b = 0.25
    #   predictions: 0.5 - 2 + 0.25 = -1.25 and 1.5 + 1 + 0.25 = 2.75
    #   residuals r = (-2.25, 2.75); J = mean(r²) = (5.0625 + 7.5625) / 2 = 6.3125
    #   dJ/dpred = 2r/N = r;  ∇w = Σ r_i x_i = (-2.25 + 8.25, -4.5 - 2.75) = (6, -7.25);  ∇b = 0.5
    #   α = 0.25: w ← (0.5 - 1.5, -1 + 1.8125) = (-1, 0.8125);  b ← 0.25 - 0.125 = 0.125
    model = nn.Linear(2, 1)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[0.5, -1.0]]))
        model.bias.copy_(torch.tensor([0.25]))
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0]])
    y = torch.tensor([[1.0], [0.0]])
    loss_fn = make_loss(LossConfig(type="mse"), "regression")
    opt = make_optimizer(model, OptimizerConfig(type="sgd", lr=0.25), CPU)
    loss = loss_fn(model(x), y)
    assert loss.item() == 6.3125
    loss.backward()
    assert model.weight.grad.tolist() == [[6.0, -7.25]]
    assert model.bias.grad.tolist() == [0.5]
    opt.step()
    assert model.weight.tolist() == [[-1.0, 0.8125]]
    assert model.bias.tolist() == [0.125]


def test_sgd_step_equals_formula_for_a_non_dyadic_rate() -> None:
    torch.manual_seed(0)
    model = nn.Linear(5, 3)
    before = [p.detach().clone() for p in model.parameters()]
    opt = make_optimizer(model, OptimizerConfig(type="sgd", lr=0.037), CPU)
    make_loss(LossConfig(type="cross_entropy"), "classification")(model(torch.randn(4, 5)),
                                                                    torch.tensor([0, 2, 1, 2])).backward()
    grads = [p.grad.clone() for p in model.parameters()]
    opt.step()
    for p, p0, g in zip(model.parameters(), before, grads):
        exact = (p0.double() - 0.037 * g.double()).float()  # θ − α∇J, rounded once
        assert torch.allclose(p, exact, rtol=0, atol=2e-8)


@pytest.mark.parametrize("kind", ["sgd", "momentum"])
def test_momentum_two_steps(kind: str) -> None:
    # J = θ²/2, θ0 = 1, α = 0.5, μ = 0.5, v ← μv + ∇J, θ ← θ - αv
    #   step 1: g = 1, v = 1, θ = 0.5;  step 2: g = 0.5, v = 0.5 + 0.5 = 1, θ = 0.5 - 0.5 = 0
    #   step 3: g = 0, v = 0.5, θ = -0.25
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type=kind, lr=0.5, momentum=0.5), CPU)
    thetas = []
    for _ in range(3):
        _step(model, opt)
        thetas.append(model.theta.item())
    assert thetas == [0.5, 0.0, -0.25]


def test_momentum_type_defaults_to_0_9() -> None:
    # v: 1 then 0.9 + 0.9 = 1.8;  θ: 1 - 0.1 = 0.9, then 0.9 - 0.18 = 0.72
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="momentum", lr=0.1), CPU)
    _step(model, opt)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.72, abs=1e-12)


def test_adam_two_steps_by_hand() -> None:
    # J = θ²/2, θ0 = 1, α = 0.1, β = (0.9, 0.999), ε = 1e-8
    # step 1: g = 1, m = 0.1, v = 0.001, m̂ = 1, v̂ = 1, θ = 1 - 0.1·1/(1 + 1e-8) ≈ 0.9
    # step 2: g = θ ≈ 0.9, m = 0.09 + 0.09 = 0.18, v = 0.000999 + 0.00081 = 0.001809,
    #         m̂ = 0.18 / 0.19 = 0.9473684, v̂ = 0.001809 / 0.001999 = 0.9049525,
    #         θ = 0.9 - 0.1 · 0.9473684 / (0.9512900 + 1e-8) ≈ 0.8004123
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="adam", lr=0.1, betas=(0.9, 0.999), eps=1e-8), CPU)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.9, abs=1e-8)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.8004123, abs=1e-7)
    # and the same with the exact formula
    t1 = 1 - 0.1 * 1 / (1 + 1e-8)
    m, v = 0.9 * 0.1 + 0.1 * t1, 0.999 * 0.001 + 0.001 * t1 ** 2
    t2 = t1 - 0.1 * (m / (1 - 0.9 ** 2)) / (math.sqrt(v / (1 - 0.999 ** 2)) + 1e-8)
    assert model.theta.item() == pytest.approx(t2, rel=1e-12)


def test_adamw_decays_weights_apart_from_the_gradient() -> None:
    # decoupled: θ ← θ(1 - αλ) - α·m̂/(√v̂ + ε) = 1·(1 - 0.1·0.5) - 0.1 ≈ 0.85
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="adamw", lr=0.1, weight_decay=0.5), CPU)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.85, abs=1e-8)
    # coupled (adam): the decay enters the gradient, g = 1 + 0.5 = 1.5, and step 1 of Adam is
    # α·sign(g): θ ≈ 0.9
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="adam", lr=0.1, weight_decay=0.5), CPU)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.9, abs=1e-8)


def test_optimizer_holds_tied_parameters_once() -> None:
    model = GPT(GPTConfig(vocab_size=11, n_layer=1, n_head=2, n_embd=8, block_size=4))
    opt = make_optimizer(model, OptimizerConfig(type="sgd", lr=0.1), CPU)
    held = [p for g in opt.param_groups for p in g["params"]]
    assert len(held) == len({id(p) for p in held}) == len({id(p) for p in model.parameters()})


# --------------------------------------------------------------------------- losses


OUT = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.0, -0.5]])
TARGET = torch.tensor([[1.0, -1.0, 0.0], [-1.0, 0.5, 0.0]])


def test_mse() -> None:
    # residuals 0.5² + 0 + 2² + 2.5² + 0.5² + 0.5² = 0.25 + 4 + 6.25 + 0.25 + 0.25 = 11 → 11/6
    got = make_loss(LossConfig(type="mse"), "regression")(OUT, TARGET)
    assert got.item() == pytest.approx(11 / 6)


def test_l1() -> None:
    # |r| = 0.5, 0, 2, 2.5, 0.5, 0.5 → 6 / 6 = 1
    got = make_loss(LossConfig(type="l1"), "regression")(OUT, TARGET)
    assert got.item() == pytest.approx(1.0)


def test_huber() -> None:
    # δ = 1: |r| ≤ 1 → r²/2, else δ(|r| - δ/2):
    #   0.125, 0, 1.5, 2.0, 0.125, 0.125 → 3.875 / 6
    got = make_loss(LossConfig(type="huber", huber_delta=1.0), "regression")(OUT, TARGET)
    assert got.item() == pytest.approx(3.875 / 6)
    # δ = 2: 0.125, 0, 2 (r = 2 is on the quadratic side: 4/2), 2·(2.5 - 1) = 3, 0.125, 0.125 → 5.375 / 6
    got = make_loss(LossConfig(type="huber", huber_delta=2.0), "regression")(OUT, TARGET)
    assert got.item() == pytest.approx(5.375 / 6)


def _log_softmax(row: list[float]) -> list[float]:
    z = math.log(sum(math.exp(v) for v in row))
    return [v - z for v in row]


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_cross_entropy_with_and_without_label_smoothing(eps: float) -> None:
    labels = torch.tensor([2, 0])
    expected = 0.0
    for row, y in zip(OUT.tolist(), labels.tolist()):
        logp = _log_softmax(row)
        k = len(row)
        # the smoothed target puts 1 - ε + ε/K on the label and ε/K on every other class
        expected += -sum(((1 - eps) * (c == y) + eps / k) * logp[c] for c in range(k))
    expected /= 2
    got = make_loss(LossConfig(type="cross_entropy", label_smoothing=eps), "classification")(OUT, labels)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_over_tokens_averages_every_position() -> None:
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.5, 0.5]]])  # [B=1, T=3, V=2]
    target = torch.tensor([[1, 0, 1]])
    expected = -(_log_softmax([0.0, 1.0])[1] + _log_softmax([2.0, 0.0])[0] + math.log(0.5)) / 3
    got = make_loss(LossConfig(type="cross_entropy"), "language_modeling")(logits, target)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def _bce(z: float, y: float) -> float:
    s = 1 / (1 + math.exp(-z))
    return -(y * math.log(s) + (1 - y) * math.log(1 - s))


def test_bce_on_binary_targets() -> None:
    out = torch.tensor([[0.3], [-1.2], [2.0]])
    y = torch.tensor([[1.0], [0.0], [0.0]])
    expected = (_bce(0.3, 1) + _bce(-1.2, 0) + _bce(2.0, 0)) / 3
    got = make_loss(LossConfig(type="bce"), "regression")(out, y)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_bce_on_class_labels_is_one_vs_rest() -> None:
    labels = torch.tensor([2, 0])
    expected = sum(_bce(z, float(c == y)) for row, y in zip(OUT.tolist(), labels.tolist())
                   for c, z in enumerate(row)) / 6
    got = make_loss(LossConfig(type="bce"), "classification")(OUT, labels)
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_mse_on_class_labels_regresses_onto_one_hot() -> None:
    out = torch.tensor([[0.5, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0])
    # one-hot targets (1,0), (1,0): residuals 0.5, 0, 1, 2 → (0.25 + 1 + 4) / 4
    got = make_loss(LossConfig(type="mse"), "classification")(out, labels)
    assert got.item() == pytest.approx(5.25 / 4)


def test_cross_entropy_refuses_a_regression_task() -> None:
    from lmdev.errors import LmdevError

    with pytest.raises(LmdevError, match="regression"):
        make_loss(LossConfig(type="cross_entropy"), "regression")


# --------------------------------------------------------------------------- regularisation


def _grads(model: nn.Module, reg: RegularizationConfig | None) -> dict[str, torch.Tensor]:
    model.zero_grad()
    torch.manual_seed(1)
    x = torch.randn(4, model[0].in_features)
    loss = model(x).pow(2).mean()
    if reg is not None:
        term = regularization(model, reg)
        loss = loss + term
    loss.backward()
    return {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.fixture
def net() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2))
    with torch.no_grad():  # no weight exactly 0, where sign is ambiguous
        for p in model.parameters():
            p.add_(torch.where(p.abs() < 1e-3, 0.01, 0.0))
    return model


def test_l1_adds_lambda_sign_theta_to_weights_only(net: nn.Module) -> None:
    plain = _grads(net, None)
    reg = _grads(net, RegularizationConfig(l1=0.03))
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            assert torch.allclose(reg[name] - plain[name], 0.03 * torch.sign(p.detach()), atol=1e-7), name
        else:
            assert torch.equal(reg[name], plain[name]), f"{name}: a bias must not be regularised"


def test_l2_adds_two_lambda_theta_to_weights_only(net: nn.Module) -> None:
    plain = _grads(net, None)
    reg = _grads(net, RegularizationConfig(l2=0.05))
    for name, p in net.named_parameters():
        if name.endswith("weight"):
            assert torch.allclose(reg[name] - plain[name], 2 * 0.05 * p.detach(), atol=1e-7), name
        else:
            assert torch.equal(reg[name], plain[name]), name


def test_l1_and_l2_values_and_sum(net: nn.Module) -> None:
    w = [net[0].weight.detach(), net[2].weight.detach()]
    term = regularization(net, RegularizationConfig(l1=0.1, l2=0.2))
    expected = sum(0.1 * t.abs().sum() + 0.2 * t.pow(2).sum() for t in w)
    assert term.item() == pytest.approx(expected.item(), rel=1e-6)
    assert regularization(net, RegularizationConfig()) is None


def test_regularisation_skips_norm_gains_and_counts_tied_weights_once() -> None:
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=7, n_layer=1, n_head=2, n_embd=8, block_size=4, norm="layernorm"))
    term = regularization(model, RegularizationConfig(l2=0.5))
    term.backward()
    emb = model.embed.weight
    assert torch.allclose(emb.grad, 2 * 0.5 * emb.detach())  # once, not twice through the head
    assert model.norm.weight.grad is None


# --------------------------------------------------------------------------- schedules


def test_warmup_is_linear_up_to_one() -> None:
    cfg = ScheduleConfig(type="constant", warmup_steps=10)
    assert [lr_factor(s, 100, cfg) for s in (0, 4, 9)] == [pytest.approx(0.1), pytest.approx(0.5), 1.0]
    assert lr_factor(10, 100, cfg) == lr_factor(99, 100, cfg) == 1.0


def test_cosine_after_warmup() -> None:
    cfg = ScheduleConfig(type="cosine", warmup_steps=10, min_lr_ratio=0.1)
    # progress p = (step - 10) / 100; factor = 0.1 + 0.9 · (1 + cos πp) / 2
    assert lr_factor(10, 110, cfg) == pytest.approx(1.0)
    assert lr_factor(35, 110, cfg) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi / 4)) / 2)  # 0.86820
    assert lr_factor(35, 110, cfg) == pytest.approx(0.868198, abs=1e-6)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.55)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.1)
    assert lr_factor(500, 110, cfg) == pytest.approx(0.1)  # past the end: stays at the floor


def test_linear_after_warmup() -> None:
    cfg = ScheduleConfig(type="linear", warmup_steps=10, min_lr_ratio=0.0)
    assert lr_factor(5, 110, cfg) == pytest.approx(0.6)
    assert lr_factor(35, 110, cfg) == pytest.approx(0.75)
    assert lr_factor(60, 110, cfg) == pytest.approx(0.5)
    assert lr_factor(110, 110, cfg) == pytest.approx(0.0)


def test_scheduler_drives_the_optimizer_lr_step_by_step() -> None:
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="sgd", lr=0.2), CPU)
    cfg = ScheduleConfig(type="linear", warmup_steps=2, min_lr_ratio=0.0)
    sched = make_scheduler(opt, cfg, 6)
    seen = []
    for _ in range(6):
        seen.append(opt.param_groups[0]["lr"])
        _step(model, opt)
        sched.step()
    # warm-up 0.5, 1; then linear over 4 steps: 1, 0.75, 0.5, 0.25
    assert seen == pytest.approx([0.1, 0.2, 0.2, 0.15, 0.1, 0.05])


# --------------------------------------------------------------------------- sparse_adam


def test_sparse_adam_dense_gradients_are_adam() -> None:
    # the same first step as Adam by hand: θ = 1 - 0.1 · 1 / (1 + 1e-8) ≈ 0.9
    model = Scalar(1.0)
    opt = make_optimizer(model, OptimizerConfig(type="sparse_adam", lr=0.1), CPU)
    _step(model, opt)
    assert model.theta.item() == pytest.approx(0.9, abs=1e-8)
    torch.manual_seed(0)
    a, b = nn.Linear(4, 3), nn.Linear(4, 3)
    b.load_state_dict(a.state_dict())
    ours = make_optimizer(a, OptimizerConfig(type="sparse_adam", lr=0.01, betas=(0.8, 0.99)), CPU)
    ref = torch.optim.Adam(b.parameters(), lr=0.01, betas=(0.8, 0.99))
    x = torch.randn(6, 4)
    for _ in range(4):
        for m, o in ((a, ours), (b, ref)):
            o.zero_grad()
            m(x).pow(2).sum().backward()
            o.step()
    for p, q in zip(a.parameters(), b.parameters()):
        assert torch.allclose(p, q, rtol=1e-5, atol=1e-7)


def test_sparse_adam_sparse_gradients_update_only_the_rows_touched() -> None:
    torch.manual_seed(0)
    ours_emb, ref_emb = nn.Embedding(10, 3, sparse=True), nn.Embedding(10, 3, sparse=True)
    ref_emb.load_state_dict(ours_emb.state_dict())
    before = ours_emb.weight.detach().clone()
    ours = make_optimizer(ours_emb, OptimizerConfig(type="sparse_adam", lr=0.05), CPU)
    ref = torch.optim.SparseAdam(list(ref_emb.parameters()), lr=0.05)
    batches = [torch.tensor([1, 4, 4, 7]), torch.tensor([4, 2]), torch.tensor([7, 7, 1])]
    for idx in batches:  # index 4 twice in a batch: the gradient rows are summed
        for emb, opt in ((ours_emb, ours), (ref_emb, ref)):
            opt.zero_grad()
            emb(idx).pow(2).sum().backward()
            opt.step()
    assert torch.allclose(ours_emb.weight, ref_emb.weight, rtol=1e-5, atol=1e-7)
    untouched = [0, 3, 5, 6, 8, 9]
    assert torch.equal(ours_emb.weight[untouched], before[untouched])
    assert not torch.equal(ours_emb.weight[[1, 2, 4, 7]], before[[1, 2, 4, 7]])
