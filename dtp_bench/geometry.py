"""Check an architecture against its input before any memory is allocated: the network is built
on PyTorch's meta device (shapes, no storage), run on a batch of the run's size, and its memory
estimated, so an impossible geometry or a net that cannot fit is a config error, not a raw
RuntimeError or the OOM killer."""
from __future__ import annotations

import os

import torch
from torch.utils._pytree import tree_flatten

from .config import ConfigError
from .nn.blocks import build_network, count_parameters

# weights, their gradient, two Adam moments and a feedback copy: a generous bound per parameter
STATE_COPIES_PER_PARAMETER = 5
ACTIVATION_COPIES = 2  # forward activations, and as much again in the backward pass


def machine_memory_bytes(device: torch.device) -> int | None:
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def _forward_bytes(network, x: torch.Tensor) -> int:
    """Bytes of every new tensor the forward pass creates (views excluded): an upper bound on
    what autograd keeps for the backward pass."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Count(TorchDispatchMode):
        total = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            returns = func._schema.returns
            outputs = tree_flatten(out)[0]
            for i, t in enumerate(outputs):
                is_view = i < len(returns) and returns[i].alias_info is not None
                if isinstance(t, torch.Tensor) and not is_view:
                    Count.total += t.numel() * t.element_size()
            return out

    with Count():
        network(x)
    return Count.total


def check_geometry(arch_cfg, input_shape: tuple[int, ...], num_classes: int, batch_size: int,
                   device: torch.device, dtype: torch.dtype = torch.float32,
                   eval_batch_size: int | None = None, runs: int = 1) -> dict:
    """Raise ConfigError when ``arch_cfg`` does not fit ``input_shape`` or the machine's memory;
    returns the estimate (parameters, bytes) otherwise. Training keeps the forward tensors for
    the backward pass (counted twice); evaluation runs without autograd, at its own batch size.
    ``runs`` batched runs (trainer.parallel_runs) hold that many copies of everything."""
    shape = "×".join(map(str, input_shape))
    with torch.device("meta"):
        try:
            network = build_network(arch_cfg, input_shape, num_classes).to(dtype)
            # forward bytes are affine in the batch size: two batches give the slope and the offset
            one, two = (_forward_bytes(network, torch.zeros(n, *input_shape, dtype=dtype)) for n in (1, 2))
        except (RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0][:240] if str(exc).strip() else exc.__class__.__name__
            raise ConfigError(f"arch: arch={arch_cfg.name} does not fit {shape} inputs ({first}); change the "
                              f"layer sizes, kernels, strides or pooling (see conf/arch/{arch_cfg.name}.yaml)"
                              ) from None
    parameters = count_parameters(network.parameters())
    element = torch.tensor([], dtype=dtype).element_size()
    per_example, fixed = two - one, 2 * one - two
    train_bytes = (fixed + per_example * batch_size) * ACTIVATION_COPIES
    eval_bytes = fixed + per_example * (eval_batch_size or batch_size)
    activation_bytes, batch = max((train_bytes, batch_size), (eval_bytes, eval_batch_size or batch_size))
    needed = (parameters * element * STATE_COPIES_PER_PARAMETER + activation_bytes) * runs
    available = machine_memory_bytes(device)
    if available is not None and needed > available:
        batched = f" × {runs} batched runs" if runs > 1 else ""
        raise ConfigError(f"arch: arch={arch_cfg.name} on {shape} inputs at batch size {batch}{batched} needs an "
                          f"estimated "
                          f"{needed / 2**30:.1f} GiB ({parameters / 1e6:.1f} M parameters, "
                          f"{activation_bytes / 2**30:.1f} "
                          f"GiB of activations), more than this {device.type} device's "
                          f"{available / 2**30:.1f} GiB; use smaller layers or a smaller trainer.batch_size / "
                          f"trainer.eval_batch_size" + (" / trainer.parallel_runs" if runs > 1 else ""))
    return {"parameters": parameters, "estimated_bytes": needed}
