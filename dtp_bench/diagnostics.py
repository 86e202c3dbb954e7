"""Alignment diagnostics: how far each algorithm's update is from backprop's, and how far its
feedback functions are from the transposed forward Jacobians.

One entry point, ``measure(algorithm, x, y, cfg) -> {name: float}``, called by the trainer every
``diagnostics.every_n_steps`` training steps on the current batch (before that step's update). It
works for every algorithm through ``Algorithm.forward_update`` and, for feedback functions,
through the attributes the target-propagation engine has (duck-typed, so its subclasses work):

* ``angle_update/block<i>``: angle (degrees) between the algorithm's update of block i's weight
  tensor (what ``forward_update`` writes into ``.grad``, before the optimizer) and the true
  gradient of the mean cross-entropy on the same batch; ``angle_update/all`` over every network
  parameter at once. Backprop against itself gives 0.
* ``angle_jacobian/block<i>``: for blocks with a feedback function g_i, the angle between vec(J_g)
  at the lifted h_{i+1} and vec(J_fᵀ) at h_i, averaged over ``cfg.jacobian_samples`` samples (the
  first ones of the batch). f here is what g reads: the block followed by ``algorithm.lifted``
  (the top block's output code), so the two Jacobians always have transposed shapes. Blocks with
  batch normalisation use the batch's statistics as constants (a per-sample function). When
  |h_i|·|h_{i+1}| exceeds ``MAX_JACOBIAN_ENTRIES`` the angle is estimated with ``N_PROJECTIONS``
  Gaussian vectors v (fixed seed, own generator): angle between [J_g v_k]_k and [J_fᵀ v_k]_k,
  a consistent estimate of the same Frobenius angle.
* ``angle_weight/block<i>``: angle between the forward weight W_i and the feedback weight in W's
  layout (Linear: Vᵀ; ConvTranspose2d and the transposed LC map share the forward layout; FA's B
  has W's layout). Skipped when the shapes do not match (e.g. AO-SDTP's widened top feedback).
* ``condition/block<i>``: FW-DTP's condition, the fraction of eigenvalues of J_f·J_g (|h_{i+1}|
  square) with a positive real part, on the first ``CONDITION_SAMPLES`` samples (a dense
  non-symmetric eigen-decomposition is O(n³): about a second for n = 1024 on a free CPU core,
  the bulk of the cost of ``measure`` on 1024-wide layers). When |h_i| < |h_{i+1}| the
  non-zero eigenvalues are those of J_g·J_f and the others are exactly 0 (not positive), so the
  smaller product is used; eigenvalues below ``POSITIVE_TOLERANCE`` × the spectral radius count
  as zero. Only with exact Jacobians and min(|h_i|, |h_{i+1}|) ≤ ``MAX_EIG_SIZE``.

Keys whose angle is undefined (a zero update or gradient) are left out. ``measure`` leaves no
trace: the weights are not touched, every ``.grad`` is restored, and the CPU/CUDA, ``random`` and
NumPy RNG states are restored, so a run with diagnostics trains exactly like one without (as long
as ``forward_update`` keeps its contract of not changing the model).
"""
from __future__ import annotations

import contextlib
import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from .algorithms.base import cross_entropy
from .nn.blocks import BatchNormNoAffine, max_pool_with_indices

MAX_JACOBIAN_ENTRIES = 2 ** 22  # |h_i|·|h_{i+1}| above this: random projections instead
MAX_EIG_SIZE = 4096  # largest matrix whose eigenvalues the condition computes
CONDITION_SAMPLES = 1  # samples on which the condition is computed (the Jacobian angle uses all)
N_PROJECTIONS = 64  # Gaussian vectors of the projection estimate
PROJECTION_SEED = 0
CHUNK = 256  # rows of a Jacobian computed per batched backward pass
POSITIVE_TOLERANCE = 1e-6  # Re λ must exceed this × max |λ| to count as positive


# ---------------------------------------------------------------- the entry point
def measure(algorithm, x: torch.Tensor, y: torch.Tensor, cfg) -> dict[str, float]:
    """All diagnostics for ``algorithm`` on the batch (x, y); ``cfg``: a DiagnosticsConfig (only
    ``jacobian_samples`` is read). See the module docstring for the keys."""
    with _no_trace(algorithm), torch.enable_grad():
        out = update_angles(algorithm, x, y)
        if _has_feedback_functions(algorithm):
            out.update(feedback_diagnostics(algorithm, x, cfg.jacobian_samples))
        out.update(weight_angles(algorithm))
    return out


def summarize(measurements: list[dict[str, float]]) -> dict[str, Any]:
    """What the trainer logs for an epoch: per key the mean over the epoch's measurements and the
    last value, plus how many measurements there were."""
    keys = sorted({k for m in measurements for k in m})
    mean = {k: float(np.mean([m[k] for m in measurements if k in m])) for k in keys}
    return {"count": len(measurements), "mean": mean, "last": dict(measurements[-1]) if measurements else {}}


# ---------------------------------------------------------------- helpers
def angle(a: torch.Tensor, b: torch.Tensor) -> float | None:
    """Angle in degrees between vec(a) and vec(b); None when either is zero or not finite.
    2·atan2(‖â − b̂‖, ‖â + b̂‖) is accurate near 0° and 180° (acos of the cosine is not)."""
    a, b = a.detach().reshape(-1).double(), b.detach().reshape(-1).double()
    na, nb = a.norm(), b.norm()
    if not (torch.isfinite(na) and torch.isfinite(nb)) or na == 0 or nb == 0:
        return None
    a, b = a / na, b / nb
    return math.degrees(2.0 * math.atan2((a - b).norm().item(), (a + b).norm().item()))


@contextlib.contextmanager
def _no_trace(algorithm: nn.Module) -> Iterator[None]:
    """Restore every parameter's ``.grad`` (set to None inside) and all RNG states on exit."""
    params = list(algorithm.parameters())
    grads = [p.grad for p in params]
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
    py_rng, np_rng = random.getstate(), np.random.get_state()
    for p in params:
        p.grad = None
    try:
        yield
    finally:
        for p, g in zip(params, grads):
            p.grad = g
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        random.setstate(py_rng)
        np.random.set_state(np_rng)


def _put(out: dict, key: str, value: float | None) -> None:
    if value is not None and math.isfinite(value):
        out[key] = value


# ---------------------------------------------------------------- update vs backprop
def update_angles(algorithm, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Angles between ``forward_update``'s ``.grad`` and the true gradient, per block weight and
    overall. Expects every ``.grad`` to be None on entry (``measure`` sees to it)."""
    network = algorithm.network
    params = [p for p in network.parameters() if p.requires_grad]
    true_grads = torch.autograd.grad(cross_entropy(network(x), y), params, allow_unused=True)
    true = {id(p): g for p, g in zip(params, true_grads)}
    algorithm.forward_update(x, y)
    update = {id(p): p.grad for p in params}

    out: dict[str, float] = {}
    for i, block in enumerate(network.blocks):
        try:
            weight = block.weight_op.weight
        except AttributeError:
            continue
        if true.get(id(weight)) is not None and update.get(id(weight)) is not None:
            _put(out, f"angle_update/block{i}", angle(update[id(weight)], true[id(weight)]))
    flat_true = [true[id(p)] if true[id(p)] is not None else torch.zeros_like(p) for p in params]
    flat_update = [update[id(p)] if update[id(p)] is not None else torch.zeros_like(p) for p in params]
    if params:
        _put(out, "angle_update/all", angle(torch.cat([g.reshape(-1) for g in flat_update]),
                                            torch.cat([g.reshape(-1) for g in flat_true])))
    return out


# ---------------------------------------------------------------- feedback functions
def _has_feedback_functions(algorithm) -> bool:
    return isinstance(getattr(algorithm, "feedback", None), nn.ModuleDict) and \
        hasattr(algorithm, "feedback_blocks") and len(algorithm.feedback) > 0


def _run_block(block: nn.Module, h: torch.Tensor,
               stats: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
    """Block ``block`` on ``h`` op by op. Batch normalisation records its batch statistics into a
    new list (``stats`` None) or uses the given ones (a per-sample function). Returns (out, stats)."""
    recorded, k = [], 0
    for op in block.ops:
        if isinstance(op, BatchNormNoAffine):
            if stats is None:
                mean, var = op.batch_statistics(h)
                recorded.append((mean, var))
            else:
                mean, var = stats[k]
                k += 1
            h = op.normalise(h, mean, var)
        elif isinstance(op, nn.MaxPool2d):
            h, _ = max_pool_with_indices(op, h)
        else:
            h = op(h)
    return h, recorded


def _repeat(t: torch.Tensor, k: int) -> torch.Tensor:
    """A one-sample tensor stacked k times."""
    return t.expand(k, *t.shape[1:]).contiguous()


def _repeat_ctx(ctx: dict, k: int) -> dict:
    return {key: _repeat(v, k) if isinstance(v, torch.Tensor) else v for key, v in ctx.items()}


def _slice_ctx(ctx: dict, s: int) -> dict:
    return {key: v[s:s + 1] if isinstance(v, torch.Tensor) else v for key, v in ctx.items()}


def jacobian(fn: Callable[[torch.Tensor], torch.Tensor], inp: torch.Tensor, out_dim: int) -> torch.Tensor:
    """(out_dim, |inp|) Jacobian of a per-sample function at the one-sample ``inp``: the sample is
    stacked once per output unit (in chunks) and one backward pass with one-hot output gradients
    gives the rows. Works with any op that runs on batches (pool indices, LC layers, …)."""
    eye = torch.eye(out_dim, dtype=inp.dtype, device=inp.device)
    rows = []
    for start in range(0, out_dim, CHUNK):
        v = eye[start:start + CHUNK]
        rep = _repeat(inp.detach(), len(v)).requires_grad_(True)
        (g,) = torch.autograd.grad(fn(rep).reshape(len(v), -1), rep, v)
        rows.append(g.reshape(len(v), -1))
    return torch.cat(rows)


def _vjp_rows(fn, inp: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Rows vₖᵀ J (each of |inp|) of a per-sample function for the given output-space vectors."""
    rep = _repeat(inp.detach(), len(vectors)).requires_grad_(True)
    (g,) = torch.autograd.grad(fn(rep).reshape(len(vectors), -1), rep, vectors)
    return g.reshape(len(vectors), -1)


def _jvp_rows(fn, inp: torch.Tensor, vectors: torch.Tensor) -> torch.Tensor:
    """Rows J vₖ of a per-sample function for input-space vectors (double-backward trick)."""
    rep = _repeat(inp.detach(), len(vectors)).requires_grad_(True)
    out = fn(rep).reshape(len(vectors), -1)
    w = torch.zeros_like(out, requires_grad=True)
    (vjp,) = torch.autograd.grad(out, rep, w, create_graph=True)
    (jv,) = torch.autograd.grad(vjp, w, vectors.view_as(rep))
    return jv.reshape(len(vectors), -1)


def positive_fraction(j_f: torch.Tensor, j_g: torch.Tensor) -> float | None:
    """Fraction of the eigenvalues of J_f·J_g (|h_{i+1}| of them) with positive real part."""
    n_out, n_in = j_f.shape
    small = j_f @ j_g if n_out <= n_in else j_g @ j_f  # same non-zero eigenvalues
    if len(small) > MAX_EIG_SIZE:
        return None
    eig = torch.linalg.eigvals(small.double().cpu())
    radius = eig.abs().max()
    if not torch.isfinite(radius):
        return None
    positive = (eig.real > POSITIVE_TOLERANCE * radius).sum().item() if radius > 0 else 0
    return positive / n_out


@contextlib.contextmanager
def _frozen_batch_statistics(module: nn.Module, record: Callable[[], Any]) -> Iterator[None]:
    """Inside, every BatchNormNoAffine of ``module`` normalises with the batch statistics it saw
    while ``record()`` ran, so ``module`` is a per-sample function (as ``_run_block`` makes f):
    its Jacobian at one sample is then defined, and stacking copies of the sample cannot change it."""
    norms = [m for m in module.modules() if isinstance(m, BatchNormNoAffine)]
    stats: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def recording(m: BatchNormNoAffine):
        def forward(h: torch.Tensor) -> torch.Tensor:
            stats[id(m)] = m.batch_statistics(h)
            return m.normalise(h, *stats[id(m)])
        return forward

    def frozen(m: BatchNormNoAffine):
        return lambda h: m.normalise(h, *stats[id(m)])

    try:
        for m in norms:
            m.forward = recording(m)  # an instance attribute shadows the class's forward
        with torch.no_grad():
            record()
        for m in norms:
            m.forward = frozen(m)
        yield
    finally:
        for m in norms:
            m.__dict__.pop("forward", None)


def feedback_diagnostics(algorithm, x: torch.Tensor, n_samples: int) -> dict[str, float]:
    """``angle_jacobian`` and ``condition`` for every block with a feedback function."""
    network = algorithm.network
    lifted = getattr(algorithm, "lifted", None)
    with torch.no_grad():
        hs, ctxs = network.activations_ctx(x, detach_inputs=True)
    n = min(n_samples, len(x))
    out: dict[str, float] = {}
    for i in algorithm.feedback_blocks:
        if str(i) not in algorithm.feedback:
            continue
        g, block = algorithm.feedback[str(i)], network.blocks[i]
        with torch.no_grad():
            _, stats = _run_block(block, hs[i])  # the batch's normalisation statistics, if any

        def f(h: torch.Tensor, block=block, stats=stats, i=i) -> torch.Tensor:
            h_next, _ = _run_block(block, h, stats)
            return lifted(i, h_next, h) if lifted is not None else h_next

        code_batch = lifted(i, hs[i + 1], hs[i]) if lifted is not None else hs[i + 1]
        with _frozen_batch_statistics(g, lambda: g(code_batch, ctxs[i])):
            angles, conditions = _block_angles(f, g, hs[i], ctxs[i], n)
        _put(out, f"angle_jacobian/block{i}", _mean(angles))
        _put(out, f"condition/block{i}", _mean(conditions))
    return out


def _block_angles(f, g, h_batch: torch.Tensor, ctx_batch: dict, n: int) -> tuple[list, list]:
    """Per sample s < n: the angle between J_g and J_fᵀ, and (first CONDITION_SAMPLES) the
    positive fraction of the spectrum of J_f J_g."""
    angles, conditions = [], []
    for s in range(n):
        h, ctx = h_batch[s:s + 1].detach(), _slice_ctx(ctx_batch, s)
        with torch.no_grad():
            code = f(h)

        def g_fn(code_batch: torch.Tensor, ctx=ctx) -> torch.Tensor:
            return g(code_batch, _repeat_ctx(ctx, len(code_batch)))

        n_in, n_out = h.numel(), code.numel()
        if n_in * n_out <= MAX_JACOBIAN_ENTRIES:
            j_f = jacobian(f, h, n_out)  # (out, in)
            j_g = jacobian(g_fn, code, n_in)  # (in, out)
            angles.append(angle(j_g, j_f.T))
            if s < CONDITION_SAMPLES:
                conditions.append(positive_fraction(j_f, j_g))
        else:
            generator = torch.Generator(device=h.device).manual_seed(PROJECTION_SEED)
            v = torch.randn(N_PROJECTIONS, n_out, generator=generator, device=h.device, dtype=h.dtype)
            angles.append(angle(_jvp_rows(g_fn, code, v), _vjp_rows(f, h, v)))
    return angles, conditions


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


# ---------------------------------------------------------------- weights
def _in_forward_layout(op: nn.Module) -> torch.Tensor:
    """A feedback op's weight laid out like its forward counterpart's: Linear (in, out) → (out, in);
    ConvTranspose2d and the transposed LC map already share the forward layout."""
    return op.weight.T if isinstance(op, nn.Linear) else op.weight


def feedback_weights(algorithm) -> dict[int, torch.Tensor]:
    """Block index → feedback weight in the layout of that block's forward weight, for algorithms
    whose feedback has one: feedback functions (``algorithm.feedback`` ModuleDict) and FA's B."""
    if _has_feedback_functions(algorithm):
        weights = {}
        for key, g in algorithm.feedback.items():
            try:
                weights[int(key)] = _in_forward_layout(g.weight_op)
            except AttributeError:
                continue
        return weights
    try:
        from .algorithms.fa import FeedbackAlignment
    except ImportError:
        return {}
    if isinstance(algorithm, FeedbackAlignment):
        return dict(enumerate(algorithm.feedback))  # B_l replaces W_lᵀ: W_l's own layout
    return {}


def weight_angles(algorithm) -> dict[str, float]:
    out: dict[str, float] = {}
    blocks = algorithm.network.blocks
    for i, weight in feedback_weights(algorithm).items():
        forward = blocks[i].weight_op.weight
        if weight.shape == forward.shape:
            _put(out, f"angle_weight/block{i}", angle(forward, weight))
    return out
