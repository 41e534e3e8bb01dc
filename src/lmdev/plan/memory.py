"""Memory of one device for a task and shape: every part added up, nothing hidden.

Parts (bytes, per device):

- weights: parameters at their storage precision (mixed-precision training: the fp32 master
  weights plus the half-precision copies autocast keeps for the forward and backward pass).
- gradients: one per trainable parameter, in the master precision.
- optimizer: states per trainable parameter (Adam: two fp32 moments; SGD: momentum).
- activations: what the forward pass saves for the backward pass, per layer and token, from the
  model's real shapes. The baseline is Korthikanti et al. 2022 ("Reducing Activation Recomputation
  in Large Transformer Models", sbh(34 + 5as/h) per layer), adjusted term by term for grouped KV
  heads, gated (SwiGLU/GeGLU) or plain MLPs, the attention implementation (eager keeps the
  s x s scores; sdpa/flash keep only q, k, v, the output and a log-sum-exp), dropout masks,
  norms computed in fp32, autocast's per-matmul input copies, mixture-of-experts routing and
  activation checkpointing (only each layer's input is kept, one layer is recomputed at a time).
- logits: batch x sequence x vocabulary; in training the logits, their log-softmax and both
  gradients are alive together at the start of the backward pass (fp32 for the loss).
- kv_cache: inference only, 2 x layers x KV heads x head dim x tokens.
- overhead: framework memory: CUDA context, cuBLAS workspaces, the caching allocator's reserve
  (a fraction of the transient allocations: activations, logits, KV cache) on a GPU; on a CPU,
  allocator slack. Measured values (``lmdev plan --measure``) replace the defaults.
- overlap: subtracted. PyTorch frees activations during the backward pass while it creates the
  gradients, so both are never held in full at the same time; the peak is the larger of the two.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from lmdev.catalog.models import ModelSpec, attention_params, mlp_params, param_count
from lmdev.errors import LmdevError

MiB = 1024**2
GiB = 1024**3

TASKS = ("infer", "serve", "train", "lora", "qlora")
LOGITS = ("all", "last")
PRECISIONS = ("fp32", "bf16", "fp16", "fp8", "int8", "int4")
OPTIMIZERS = ("adamw", "adam", "sgd", "adamw8bit")
ATTENTIONS = ("eager", "sdpa", "flash")
STRATEGIES = ("ddp", "fsdp", "zero2", "zero3")
OFFLOADS = ("optimizer", "params")

# bytes per parameter of stored weights (int8/int4: per-block scales included, bitsandbytes layout)
WEIGHT_BYTES = {"fp32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0 + 4 / 4096, "int8": 1.0 + 4 / 64,
                "int4": 0.5 + 0.127 / 8 * 8 / 8 + 2 / 64}
OPTIMIZER_BYTES = {"adamw": 8.0, "adam": 8.0, "sgd": 4.0, "adamw8bit": 2.0 + 8 / 256}

# GPU framework overhead defaults (replaced by measured values when there are some)
CUDA_CONTEXT_BYTES = 500 * MiB  # CUDA context + kernels loaded by torch: ~300-700 MB by GPU and version
CUBLAS_WORKSPACE_BYTES = 32 * MiB  # cuBLAS/cuBLASLt workspaces (Hopper: 32 MiB per handle)
ALLOCATOR_RESERVE = 0.10  # caching allocator: reserved beyond the transient allocations (fragmentation)
CPU_OVERHEAD_BYTES = 5 * MiB  # per-thread kernel buffers and caches a first step creates on a CPU


@dataclass
class Workload:
    """What to run: the task and its shape. ``batch`` is the micro-batch per device."""

    task: str = "train"
    precision: str = "bf16"
    optimizer: str = "adamw"
    batch: int = 1
    seq: int = 2048
    grad_accum: int = 1
    activation_checkpointing: bool = False
    attention: str = "sdpa"
    devices: int = 1
    strategy: str = "ddp"
    offload: str | None = None
    lora_rank: int = 16
    new_tokens: int = 0  # inference: tokens generated after the prompt of ``seq`` (the cache holds both)
    logits: str = "all"  # prefill: logits of every position (transformers' default) or only the last
    concurrency: int = 1  # serve: sequences decoded together
    context: int | None = None  # serve: tokens per sequence (prompt + generated); None = seq

    def validate(self) -> None:
        for name, value, allowed in (("task", self.task, TASKS), ("precision", self.precision, PRECISIONS),
                                     ("optimizer", self.optimizer, OPTIMIZERS),
                                     ("attention", self.attention, ATTENTIONS),
                                     ("strategy", self.strategy, STRATEGIES)):
            if value not in allowed:
                raise LmdevError(f"unknown {name} {value!r}", f"choose one of {', '.join(allowed)}")
        if self.offload is not None and self.offload not in OFFLOADS:
            raise LmdevError(f"unknown offload {self.offload!r}", "choose optimizer or params")
        if self.logits not in LOGITS:
            raise LmdevError(f"unknown logits {self.logits!r}", "choose all or last")
        for name in ("batch", "seq", "grad_accum", "devices", "lora_rank", "concurrency", "context", "new_tokens"):
            v = getattr(self, name)
            if v is None and name == "context":
                continue
            flag = f"--{name.replace('_', '-')}"
            if isinstance(v, bool) or not isinstance(v, int):
                raise LmdevError(f"{flag} must be an integer, got {v!r}", "pass a whole number")
            if v < (0 if name == "new_tokens" else 1):
                raise LmdevError(f"{flag} must be at least {0 if name == 'new_tokens' else 1}, got {v}",
                                 "pass a positive integer")
        if self.task in ("train", "lora", "qlora") and self.precision in ("int8", "int4", "fp8"):
            raise LmdevError(f"training in {self.precision} is not supported",
                             "train in bf16/fp16/fp32, or use --task qlora (4-bit base, trained adapters)")
        if self.task == "serve" and self.context is not None and self.context <= self.seq:
            raise LmdevError(f"--context {self.context} must be longer than the prompt --seq {self.seq}",
                             "the context holds the prompt and the generated tokens")

    @property
    def training(self) -> bool:
        return self.task not in ("infer", "serve")

    @property
    def generating(self) -> bool:
        """Inference that generates: the prefill keeps only the last position's logits."""
        return self.task == "serve" or (self.task == "infer" and self.new_tokens > 0)

    @property
    def cache_tokens(self) -> int:
        """Tokens per sequence the KV cache holds at the end."""
        if self.task == "serve":
            return self.context or self.seq
        return self.seq + self.new_tokens

    @property
    def tokens(self) -> int:
        return self.batch * self.seq


@dataclass
class Memory:
    """Bytes per device. ``total_bytes`` = sum of the parts - ``overlap_bytes``.

    Held for the whole run: weights, optimizer, grad_buckets, kv_cache, overhead. Transient, in
    phases that do not coincide: the forward/backward (activations, attention_scores, logits) and
    the optimizer step (gradients, optimizer_step); ``overlap_bytes`` is the smaller phase, which
    is never held on top of the larger one. ``allocator_bytes`` is what the allocator holds
    beyond the tensors at the peak (glibc's retained heap on a CPU; the caching allocator's block
    rounding and reserved-but-unallocated segments on a GPU)."""

    weights_bytes: int = 0
    gradients_bytes: int = 0
    optimizer_bytes: int = 0
    activations_bytes: int = 0
    attention_scores_bytes: int = 0  # the s x s softmax when attention is not fused (eager / math kernel)
    logits_bytes: int = 0
    optimizer_step_bytes: int = 0  # the optimizer step's temporaries
    tied_grad_sum_bytes: int = 0  # tied embeddings: the table's second gradient and the sum, end of backward
    grad_buckets_bytes: int = 0  # DDP's all-reduce buckets (a second copy of the gradients)
    kv_cache_bytes: int = 0
    allocator_bytes: int = 0
    overhead_bytes: int = 0  # runtime: CUDA context and cuBLAS workspaces (GPU), kernel buffers (CPU)
    overlap_bytes: int = 0
    cpu_offload_bytes: int = 0  # held in host RAM instead (offload), not part of the total
    allocator_basis_bytes: int = 0  # the transient bytes the allocator line is a share of (not a part)
    notes: list[str] = field(default_factory=list)

    PARTS = ("weights", "gradients", "optimizer", "activations", "attention_scores", "logits", "optimizer_step",
             "tied_grad_sum", "grad_buckets", "kv_cache", "allocator", "overhead")

    @property
    def total_bytes(self) -> int:
        return sum(int(getattr(self, f"{p}_bytes")) for p in self.PARTS) - self.overlap_bytes

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["total_bytes"] = self.total_bytes
        return d


# --- activations -----------------------------------------------------------------------------

def _act_bytes(w: Workload) -> int:
    """Bytes of an activation element: fp32 training/inference keeps fp32, otherwise half."""
    return 4 if w.precision == "fp32" else 2


def _mixed(w: Workload) -> bool:
    return w.training and w.precision in ("bf16", "fp16", "int8", "int4")


def _act_saves(activation: str) -> int:
    """Tensors of MLP width an activation function saves for its backward (its output excluded)."""
    if activation in ("gelu_new", "gelu_fast", "gelu_python", "gelu_python_tanh", "quick_gelu"):
        return 4  # written out in Python: input, tanh output and two intermediates
    return 1  # native kernels (silu, gelu, gelu_pytorch_tanh, relu): the input


def layer_activation_bytes(spec: ModelSpec, w: Workload, device: str = "gpu") -> float:
    """Bytes one transformer layer saves for the backward pass, per token (training)."""
    a = _act_bytes(w)
    mixed = _mixed(w)
    h, q, kv, f = spec.hidden, spec.q_dim, spec.kv_dim, spec.ffn
    total = 0.0
    # norms: RMSNorm (computed in fp32) keeps its input and the normalised tensor; LayerNorm its input
    per_norm = 2 * h * 4 if spec.norm == "rmsnorm" else h * 4
    total += spec.norms_per_layer * per_norm if spec.norms_per_layer <= 2 else 2 * per_norm + \
        (spec.norms_per_layer - 2) * h * 4
    # inputs of the projections: one shared tensor, or under autocast one half copy per matmul
    qkv_mm = 1 if spec.family in ("gpt2", "phi3", "lmdev-gpt") else 3  # fused q/k/v projection or three
    up_mm = (1 if spec.family in ("phi3", "lmdev-gpt") else 2) if spec.gated else 1  # fused gate/up or two
    if mixed:
        total += (qkv_mm + up_mm) * h * a
    else:
        total += 2 * h * a
    # attention
    if w.attention == "eager":
        kv_saved = 2 * q if spec.kv_heads != spec.n_heads else 2 * kv
        total += (q + kv_saved) * a  # q, k, v (k, v repeated to every query head)
        total += q * a  # output projection input
    elif _math_kernel(spec, w, device):
        # PyTorch's CPU flash kernel has no dropout: the math kernel runs and keeps the scaled q and k,
        # v (the probabilities and masks: attention_scores)
        total += (2 * q + 2 * kv) * a
        total += 2 * q * a  # output, output projection input
    else:
        if spec.family == "lmdev-gpt":
            kv = q  # lmdev's gpt repeats the KV heads for every query head before the kernel
        total += (q + 2 * kv) * a  # q, k, v saved by the kernel
        total += 2 * q * a + spec.n_heads * 4  # kernel output, output projection input, log-sum-exp
    if spec.hidden_dropout > 0:
        total += 2 * h  # two residual dropout masks (bool)
    # MLP
    experts = spec.experts_per_token if spec.moe else 1
    if spec.gated:
        mlp = (3 + _act_saves(spec.activation)) * f * a  # gate, act(gate), up, product
    else:
        mlp = (1 + _act_saves(spec.activation)) * f * a  # act input/intermediates, down input
        if spec.hidden_dropout > 0:
            mlp += 0
    total += mlp * experts
    if spec.moe:
        total += experts * h * a + spec.n_experts * 4 * 2  # token copies per expert, router logits
    return total


def _math_kernel(spec: ModelSpec, w: Workload, device: str) -> bool:
    return w.training and spec.attn_dropout > 0 and w.attention == "sdpa" and device == "cpu"


def attention_scores_bytes(spec: ModelSpec, w: Workload, device: str = "gpu") -> int:
    """The s x s attention probabilities when the attention is not one fused kernel (eager, or the
    math kernel PyTorch's CPU sdpa falls back to with dropout). Training keeps them for every
    layer (fp32 softmax, plus the half copy the next matmul saves under mixed precision, plus
    dropout's mask and output); inference holds one layer's at a time."""
    a = _act_bytes(w)
    if w.training:
        if w.attention == "eager":
            per = 4 + (a if a < 4 else 0) + ((1 + a) if spec.attn_dropout > 0 else 0)
        elif _math_kernel(spec, w, device):
            per = 2 * a + 1
        else:
            return 0
        layers = 2 if w.activation_checkpointing else spec.n_layers
        return int(w.tokens * spec.n_heads * w.seq * per * layers)
    if w.attention != "eager":
        return 0
    return int(w.tokens * spec.n_heads * w.seq * (4 + a))  # scores in fp32 and the probabilities


def activations_bytes(spec: ModelSpec, w: Workload, device: str = "gpu") -> int:
    if not w.training:
        return int(inference_transient_bytes(spec, w))
    tokens = w.tokens
    per_layer = layer_activation_bytes(spec, w, device)
    resid = 4
    if w.activation_checkpointing:
        kept = spec.n_layers * spec.hidden * resid  # each layer's input
        layers = kept + 2 * per_layer  # one layer recomputed, with its gradients in flight
    else:
        layers = spec.n_layers * per_layer
    # outside the layers: final norm and the LM head's input, embedding dropout
    a = _act_bytes(w)
    head = 2 * spec.hidden * 4 + spec.hidden * (a if _mixed(w) else 4)
    if spec.hidden_dropout > 0:
        head += spec.hidden
    return int(tokens * (layers + head))


def inference_transient_bytes(spec: ModelSpec, w: Workload) -> float:
    """Largest set of temporaries alive at once in one layer during the prefill (no gradients)."""
    a = 4 if w.precision == "fp32" else 2
    h, q, kv, f = spec.hidden, spec.q_dim, spec.kv_dim, spec.ffn
    experts = spec.experts_per_token if spec.moe else 1
    attn = (3 * h) * 4 + (2 * q + 2 * kv) * a
    # gated: act(gate), up and their product; plain: the input and what the activation computes
    mlp = 2 * h * 4 + ((2 + _act_saves(spec.activation)) if spec.gated else (1 + _act_saves(spec.activation))) \
        * f * a * experts
    return w.tokens * max(attn, mlp)


def logits_bytes(spec: ModelSpec, w: Workload) -> int:
    """The LM head's output and what is computed from it while it is alive.

    Training: the logits (fp32, or half and the loss's fp32 upcast), the log-softmax, and both
    gradients at the start of the backward pass. Prefill: every position's logits at the model's
    dtype (a plain forward call; transformers upcasts only to compute a loss), or only the last
    position's (``logits="last"``, and always when generating, as ``generate`` asks for) with the
    fp32 copy sampling takes."""
    if spec.encoder and not w.training:
        return int(w.tokens * spec.hidden * 4)
    a = 4 if w.precision == "fp32" else 2
    if w.task == "serve":
        return int(w.concurrency * spec.vocab * (a + 4))
    if not w.training:
        if w.generating or w.logits == "last":
            return int(w.batch * spec.vocab * (a + 4))
        return int(w.tokens * spec.vocab * a)
    per_token = 16 if w.precision == "fp32" else 18
    return int(w.tokens * spec.vocab * per_token)


def kv_cache_bytes(spec: ModelSpec, w: Workload) -> int:
    """Keys and values of every layer for every token the sequences hold at the end (prompt and
    generated tokens; serve: ``concurrency`` sequences of ``context`` tokens)."""
    if w.training or spec.encoder:
        return 0
    a = 4 if w.precision == "fp32" else 2
    sequences = w.concurrency if w.task == "serve" else w.batch
    return int(2 * spec.n_layers * spec.kv_dim * sequences * w.cache_tokens * a)


def kv_bytes_per_sequence(spec: ModelSpec, w: Workload, tokens: int) -> int:
    a = 4 if w.precision == "fp32" else 2
    return int(2 * spec.n_layers * spec.kv_dim * tokens * a)


def optimizer_step_bytes(spec: ModelSpec, w: Workload, device: str) -> int:
    """Temporaries of ``optimizer.step()``. PyTorch's default on a GPU is the foreach
    implementation: Adam's sqrt of the second moment is one list of tensors as large as all the
    trained parameters (fp32); on a CPU the per-parameter loop holds two temporaries of the
    largest parameter (the sqrt and its quotient). SGD with momentum updates in place."""
    if not w.training or w.task != "train" or w.optimizer == "sgd":
        return 0
    if w.optimizer == "adamw8bit":
        return int(largest_param(spec) * 4)
    if device == "gpu":
        return int(param_count(spec) * 4) // _shard(w, "optimizer")
    return int(2 * largest_param(spec) * 4)


def tied_grad_sum_bytes(spec: ModelSpec, w: Workload) -> int:
    """Tied embeddings: the table gets two gradients, the LM head's (at the start of the backward)
    and the embedding's (at its end); the second one and their sum are alive together with all
    the other gradients at the end of the backward."""
    if w.task != "train" or not spec.tied_embeddings or spec.encoder:
        return 0
    return int(2 * spec.vocab * spec.hidden * 4)


def largest_param(spec: ModelSpec) -> int:
    """Elements of the largest parameter tensor (the embedding table, an MLP matrix or the head)."""
    return max(spec.vocab * spec.hidden, spec.hidden * spec.ffn, spec.hidden * spec.q_dim)


# --- parameters, gradients, optimizer ----------------------------------------------------------

def half_weight_copies_bytes(spec: ModelSpec, w: Workload) -> int:
    """Autocast casts each matmul weight to half precision once per forward pass; the copies stay
    alive (saved for the backward) until the backward pass has used them. With activation
    checkpointing the layers save nothing, so only the LM head's copy is kept."""
    head = spec.vocab * spec.hidden
    if w.activation_checkpointing:
        return 2 * head
    return 2 * (spec.n_layers * (attention_params(spec) + mlp_params(spec) * spec.n_experts) + head)


def lora_params(spec: ModelSpec, rank: int) -> int:
    """LoRA adapters on every linear layer of every block (PEFT's ``all-linear``)."""
    h, q, kv, f = spec.hidden, spec.q_dim, spec.kv_dim, spec.ffn
    attn = rank * ((h + q) + 2 * (h + kv) + (q + h))
    mlp = rank * ((3 if spec.gated else 2) * (h + f)) * spec.n_experts
    return spec.n_layers * (attn + mlp)


def _shard(w: Workload, part: str) -> int:
    """How many devices a part is split across."""
    if w.devices <= 1:
        return 1
    if w.strategy in ("fsdp", "zero3"):
        return w.devices
    if w.strategy == "zero2" and part in ("gradients", "optimizer"):
        return w.devices
    return 1


def estimate_memory(spec: ModelSpec, w: Workload, *, device: str = "gpu",
                    overhead: dict[str, float] | None = None) -> Memory:
    """Per-device memory of ``w`` on a ``device`` kind (``gpu`` or ``cpu``).

    ``overhead`` holds learned framework terms (``context_bytes``, ``reserve_fraction``,
    ``cpu_bytes``) that replace the defaults."""
    w.validate()
    P = param_count(spec)
    m = Memory()
    learned = overhead or {}
    n_dev = w.devices

    # weights and what is trained
    copies = 0  # autocast's half-precision weight copies: held by the graph until the backward frees them
    if w.task in ("lora", "qlora"):
        base = "int4" if w.task == "qlora" else ("fp32" if w.precision == "fp32" else "bf16")
        trainable = lora_params(spec, w.lora_rank)
        m.weights_bytes = int(P * WEIGHT_BYTES[base] + trainable * 4)
        m.notes.append(f"{w.task}: base weights frozen in {base}, {trainable:,} adapter parameters "
                       f"(rank {w.lora_rank}, all linear layers) trained in fp32")
    elif w.task == "train":
        trainable = P
        m.weights_bytes = int(P * 4)
        if _mixed(w):
            copies = half_weight_copies_bytes(spec, w)
            m.weights_bytes += copies
            m.notes.append(f"mixed precision: fp32 master weights, {w.precision} copies for the matmuls")
    else:
        trainable = 0
        m.weights_bytes = int(P * WEIGHT_BYTES[w.precision])
    m.weights_bytes //= _shard(w, "weights")
    if _shard(w, "weights") > 1 and w.training:  # FSDP: the gathered layers in flight (current + prefetched)
        m.weights_bytes += int(2 * (attention_params(spec) + mlp_params(spec) * spec.n_experts) *
                               (2 if _mixed(w) else 4))

    if w.training:
        m.gradients_bytes = int(trainable * 4) // _shard(w, "gradients")
        m.optimizer_bytes = int(trainable * OPTIMIZER_BYTES[w.optimizer]) // _shard(w, "optimizer")
        if w.devices > 1 and w.strategy == "ddp":
            m.grad_buckets_bytes = int(trainable * 4)  # DDP's flat gradient buckets for all-reduce
            m.notes.append("DDP keeps a second copy of the gradients in its all-reduce buckets")

    if w.offload == "optimizer" and w.training:
        m.cpu_offload_bytes += m.optimizer_bytes + int(trainable * 4) // _shard(w, "optimizer")
        m.optimizer_bytes = 0
        m.notes.append("optimizer states (and fp32 master weights' update) in host RAM")
    if w.offload == "params":
        held = int(2 * (attention_params(spec) + mlp_params(spec) * spec.n_experts) *
                   WEIGHT_BYTES.get(w.precision if not w.training else "bf16", 2))
        m.cpu_offload_bytes += max(0, m.weights_bytes - held)
        m.weights_bytes = min(m.weights_bytes, held)
        m.notes.append("parameters in host RAM, streamed in one layer at a time")

    m.activations_bytes = activations_bytes(spec, w, device)
    m.attention_scores_bytes = attention_scores_bytes(spec, w, device)
    m.logits_bytes = logits_bytes(spec, w)
    m.optimizer_step_bytes = optimizer_step_bytes(spec, w, device) if w.offload != "optimizer" else 0
    m.kv_cache_bytes = kv_cache_bytes(spec, w) // (n_dev if n_dev > 1 and not w.training else 1)
    forward = m.activations_bytes + m.attention_scores_bytes + m.logits_bytes + copies // _shard(w, "weights")
    if w.training:
        # the forward/backward and the optimizer step do not coincide; zero_grad(set_to_none=True)
        # frees the gradients before the next forward, unless they accumulate over micro-batches
        # the LM head's weight gradient is the first one made, while the logits' gradients are alive
        head_grad = spec.vocab * spec.hidden * 4 if w.task == "train" and w.grad_accum == 1 and not spec.encoder else 0
        m.tied_grad_sum_bytes = tied_grad_sum_bytes(spec, w) // _shard(w, "gradients")
        grads = m.gradients_bytes if w.grad_accum == 1 else 0
        # the end of the backward (a tied table's second gradient and their sum) and the optimizer
        # step's temporaries do not coincide either
        step = grads + max(m.optimizer_step_bytes, m.tied_grad_sum_bytes)
        peak = max(forward + min(head_grad, grads), step)
        m.overlap_bytes = forward + grads + m.optimizer_step_bytes + m.tied_grad_sum_bytes - peak
    else:
        # a layer's temporaries are gone when the LM head runs
        m.overlap_bytes = min(m.activations_bytes + m.attention_scores_bytes, m.logits_bytes)
    if device == "cpu":
        m.overhead_bytes = int(learned.get("cpu_bytes", CPU_OVERHEAD_BYTES))
        m.allocator_bytes = cpu_allocator_bytes(spec, w, m, learned, copies // _shard(w, "weights"))
        m.notes.append("CPU: glibc's default malloc keeps freed blocks under its mmap threshold (up to 32 MiB) "
                       "in the heap; the allocator line is the heap one phase leaves that the peak phase "
                       "cannot use")
    else:
        context = int(learned.get("context_bytes", CUDA_CONTEXT_BYTES))
        m.overhead_bytes = context + CUBLAS_WORKSPACE_BYTES
        m.allocator_bytes = gpu_allocator_bytes(spec, w, m, learned)
    return m


# --- the allocators ------------------------------------------------------------------------------

GLIBC_MMAP_MAX = 32 * MiB  # glibc's dynamic mmap threshold never rises above this (64-bit)
CPU_HEAP_FRAGMENTATION = 0.3  # set on the tuning seed's generated configs (benchmarks/plan_accuracy.py)
# share of heap-served logits bytes left as split holes; set on seeds 27182 and 16180 (three steps,
# repeated runs): untied heads add their own head-sized gradient, which splits more holes
HEAP_LOGITS_FRAGMENTATION = {"train": 0.6, "train_tied": 0.3, "infer": 0.4}


def _split(parts: Sequence[tuple[float, float]]) -> tuple[float, float]:
    """(heap, mapped) bytes of ``parts`` = [(total bytes, bytes of each tensor)]: glibc serves a
    tensor above the mmap threshold with its own mapping, returned to the system when freed."""
    heap = sum(total for total, each in parts if each <= GLIBC_MMAP_MAX)
    return heap, sum(total for total, _each in parts) - heap


def _train_phases(spec: ModelSpec, w: Workload, m: Memory, copies: int) -> tuple[tuple[float, float], ...]:
    """(heap, mapped) bytes of the forward/backward phase and of the optimizer-step phase."""
    a = _act_bytes(w)
    head = spec.vocab * spec.hidden * 4  # the embedding's / the head's weight, or its gradient
    head_grad = head if w.task == "train" and w.grad_accum == 1 and not spec.encoder else 0
    big_grads = head * (1 if spec.tied_embeddings else 2) if w.task == "train" else 0
    forward = [(m.activations_bytes, w.tokens * max(spec.ffn, spec.hidden) * a),
               (m.attention_scores_bytes, w.batch * spec.n_heads * w.seq * w.seq * 4),
               (m.logits_bytes, w.tokens * spec.vocab * 4), (copies, head // 2),
               (min(head_grad, m.gradients_bytes), head)]
    grads = m.gradients_bytes if w.grad_accum == 1 else 0
    late = (m.optimizer_step_bytes, largest_param(spec) * 4) if m.optimizer_step_bytes >= m.tied_grad_sum_bytes \
        else (m.tied_grad_sum_bytes, head)
    step = [late, (min(big_grads, grads), head), (max(0, grads - big_grads), 0)]
    return _split(forward), _split(step)


def heap_logits_fragmentation(spec: ModelSpec, w: Workload, m: Memory) -> int:
    """The heap a step's logits leave behind when glibc serves them from the heap (each tensor
    under the 32 MiB ceiling, so from the second step on, once the mmap threshold has risen past
    them): the next step's smaller blocks (activations, gradients, the KV cache) land in the freed
    logits holes and split them, and its logits go elsewhere. A share of the logits bytes;
    repeated runs of one config differ by up to a tensor (the heap's layout is not deterministic),
    and the share sits near the top of that spread (``benchmarks/plan_accuracy.py``)."""
    if spec.encoder or (not w.training and w.precision != "fp32"):
        return 0  # half-precision prefills measured over the plan already (their logits are half the size)
    rows = w.concurrency if w.task == "serve" else (w.batch if (w.generating or w.logits == "last") and not
                                                    w.training else w.tokens)
    each = rows * spec.vocab * 4
    kind = ("train_tied" if spec.tied_embeddings else "train") if w.training else "infer"
    return int(HEAP_LOGITS_FRAGMENTATION[kind] * m.logits_bytes) if each <= GLIBC_MMAP_MAX else 0


def cpu_allocator_bytes(spec: ModelSpec, w: Workload, m: Memory, learned: dict[str, float], copies: int = 0) -> int:
    """glibc's default malloc at the peak, beyond the tensors alive then.

    A freed block under the mmap threshold (which rises to the largest mapped block freed so far,
    at most 32 MiB) stays in the heap for reuse; a larger tensor is mapped and unmapped on its own.
    So the heap a phase grew stays resident while another phase runs: the peak holds the larger
    mapped part of the two phases (forward/backward; optimizer step) plus the larger heap part,
    not the larger phase alone; blocks made late (the embedding's gradient, the step's temporaries)
    cannot reuse smaller holes and go on top. Inference: the prefill's per-layer temporaries and the KV cache
    (re-allocated a little larger at every generated token) leave as much again in the heap.
    ``cpu_heap_fraction`` (learned by ``lmdev plan --measure``) scales the result."""
    fraction = float(learned.get("cpu_heap_fraction", 1.0))
    if w.training:
        (fh, fm), (sh, sm) = _train_phases(spec, w, m, copies)
        # plus fragmentation: the backward frees activations while it allocates gradients of other
        # sizes, and not every hole is reused (a share of the heap-served activations; the logits'
        # chain is tensors of one size, whose holes are reused)
        act_heap, _ = _split([(m.activations_bytes, w.tokens * max(spec.ffn, spec.hidden) * _act_bytes(w)),
                              (m.attention_scores_bytes, w.batch * spec.n_heads * w.seq * w.seq * 4)])
        # Late large blocks (the embedding's gradient, made last in the backward; the step's
        # temporaries) reuse the forward's freed heap only when it held blocks that large (the
        # logits' chain); else they go on top of the heap the forward grew.
        head = spec.vocab * spec.hidden * 4
        holes = max([size for size in (w.tokens * max(spec.ffn, spec.hidden) * _act_bytes(w),
                                       w.tokens * spec.vocab * 4) if size <= GLIBC_MMAP_MAX], default=0)

        def on_top(each: float, total: float) -> float:
            return total if holes < each <= GLIBC_MMAP_MAX else 0.0

        grads = m.gradients_bytes if w.grad_accum == 1 else 0
        late = on_top(head, head if w.task == "train" and grads else 0)  # the embedding's gradient
        each, total = (largest_param(spec) * 4, m.optimizer_step_bytes) \
            if m.optimizer_step_bytes >= m.tied_grad_sum_bytes else (head, m.tied_grad_sum_bytes)
        temps = on_top(each, total)
        temps_heap = total if each <= GLIBC_MMAP_MAX else 0
        grads_heap = sh - temps_heap
        h2 = max(fh, grads_heap - late) + late  # the end of the backward
        h3 = max(h2, grads_heap + temps_heap - temps) + temps  # the optimizer step
        # the heap never shrinks: from the second step on, its high-water mark is under every
        # phase, the forward's mapped logits included
        rss = max(fm, sm) + h3
        retained = rss - max(fh + fm, sh + sm) + CPU_HEAP_FRAGMENTATION * act_heap
        retained += heap_logits_fragmentation(spec, w, m)
        m.allocator_basis_bytes = int(retained)
        return int(fraction * retained)
    a = _act_bytes(w)
    tokens = w.batch * w.seq if w.task == "infer" else w.seq
    heap, _mapped = _split([(m.activations_bytes, tokens * max(spec.ffn, spec.hidden) * a),
                            (m.attention_scores_bytes, tokens * spec.n_heads * w.seq * 4),
                            (m.kv_cache_bytes if w.generating else 0, m.kv_cache_bytes / max(1, spec.n_layers) / 2)])
    heap += heap_logits_fragmentation(spec, w, m)
    m.allocator_basis_bytes = int(heap)
    return int(fraction * heap)


def gpu_allocator_bytes(spec: ModelSpec, w: Workload, m: Memory, learned: dict[str, float]) -> int:
    """PyTorch's caching allocator: every block is rounded up (512 B; large blocks to 2 MiB
    segments) and freed blocks stay reserved for reuse, so reserved exceeds allocated by a share of
    the transient allocations (activations, logits, KV cache growth, autocast copies, gradients,
    step temporaries); states allocated once are not fragmented."""
    reserve = float(learned.get("reserve_fraction", ALLOCATOR_RESERVE))
    dynamic = (m.activations_bytes + m.attention_scores_bytes + m.logits_bytes + m.kv_cache_bytes
               + m.optimizer_step_bytes)
    m.allocator_basis_bytes = dynamic
    tensors = spec.n_layers * (12 if w.training else 4) + 8  # live blocks, each rounded up by ~1 MiB on average
    return int(reserve * dynamic + tensors * MiB)


def largest(fits: Any, lo: int, hi: int) -> int:
    """Largest integer in [lo, hi] for which ``fits`` holds (0 when even ``lo`` does not)."""
    if not fits(lo):
        return 0
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid - 1
    return lo


def human(n: float) -> str:
    for unit, size in (("TiB", 1024**4), ("GiB", GiB), ("MiB", MiB), ("KiB", 1024)):
        if abs(n) >= size:
            return f"{n / size:.2f} {unit}" if abs(n) < 100 * size else f"{n / size:.0f} {unit}"
    return f"{int(n)} B"


__all__ = [
    "Memory",
    "Workload",
    "estimate_memory",
    "human",
    "largest",
    "layer_activation_bytes",
    "lora_params",
]
