"""scaling_dtp / l_drl (Ernoult et al. 2022): the L-DRL feedback loss, the fast lock-step
implementation against the plain per-layer loop, and learning."""
from __future__ import annotations

import copy
import dataclasses
import json
import math

import pytest
import torch
from test_target_prop import loss_against_frozen, propagated_blocks

from dtp_bench.algorithms.scaling_dtp import ScalingDTP, _ClosedForm, _Layer
from dtp_bench.algorithms.schemas import ScalingDTPConfig
from dtp_bench.config import ConfigError, OptimizerConfig
from dtp_bench.nn.archs import build_conv_pool
from dtp_bench.nn.blocks import build_fc
from dtp_bench.nn.schemas import ConvPoolArchConfig, FCArchConfig
from dtp_bench.trainer import SUMMARY


@pytest.fixture(autouse=True)
def one_thread():
    """These tensors are tiny: on a busy 2-core machine, 2 threads make them ~10× slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def config(**overrides) -> ScalingDTPConfig:
    base = dict(feedback_iterations=3, noise=0.2,
                feedback_optimizer=OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9),
                optimizer=OptimizerConfig(name="sgd", lr=0.03, momentum=0.9, weight_decay=1e-4))
    base.update(overrides)
    return ScalingDTPConfig(**base)


def small_lenet(seed=0, dtype=torch.float64, bias=True):
    torch.manual_seed(seed)
    return build_conv_pool(ConvPoolArchConfig(channels=[4, 6], fc_hidden=[12], bias=bias), (3, 12, 12), 5).to(dtype)


def small_fc(seed=0, dtype=torch.float64, widths=(12, 10, 8), activation="elu"):
    torch.manual_seed(seed)
    return build_fc(FCArchConfig(hidden=list(widths), activation=activation), (16,), 5).to(dtype)


def lenet_config(**overrides):
    return config(feedback_iterations=[4, 6, 2], noise=[0.4, 0.38, 0.14],
                  feedback_optimizer=OptimizerConfig(name="sgd", lr=[5e-3, 2e-3, 3e-2], momentum=0.9),
                  **overrides)


# ---------------------------------------------------------------- the loss
def test_ldrl_loss_matches_a_hand_computation():
    """One ELU block 3 → 2 with the mirrored feedback g(y) = V·elu(y) + c."""
    torch.manual_seed(0)
    net = small_fc(widths=(3, 2), activation="elu")  # blocks: 16→3, 3→2 (ELU), 2→5
    algo = ScalingDTP(config(noise=0.3), net, 1)
    i = 1
    g = algo.feedback[str(i)]
    x = torch.randn(7, 3, dtype=torch.float64)
    with torch.no_grad():
        y, ctx = net.blocks[i].forward_ctx(x)
    layer = _Layer(i, 1, 0.3, x, y, ctx, [torch.Generator().manual_seed(11)])
    loss = algo.ldrl_loss(layer)

    gen = torch.Generator().manual_seed(11)
    W, b = net.blocks[i].weight_op.weight, net.blocks[i].weight_op.bias
    V, c = g.weight_op.weight, g.weight_op.bias
    f = lambda h: torch.nn.functional.elu(h @ W.T + b)  # noqa: E731
    G = lambda h: torch.nn.functional.elu(h) @ V.T + c  # noqa: E731
    dx = 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
    dy = 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
    r = G(y)
    expected = sum(-2.0 * torch.dot(dx[n], G(f(x + dx))[n] - r[n]) + ((G(y + dy)[n] - r[n]) ** 2).sum()
                   for n in range(7)) / 7
    torch.testing.assert_close(loss, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [1, 2, 3])
def test_closed_form_gradient_equals_autograd_of_the_loss(block):
    """Conv/pool (MaxUnpool → ELU → ConvTranspose), flatten (ELU → Linear → Unflatten) and output
    feedback: the lock-step's closed-form gradient is that of the literal loss, bias gradient 0."""
    net = small_lenet()
    algo = ScalingDTP(lenet_config(), net, 1)
    g = algo.feedback[str(block)]
    x = torch.randn(6, 3, 12, 12, dtype=torch.float64)
    with torch.no_grad():
        hs, ctxs = net.activations_ctx(x)
    layer = _Layer(block, 1, 0.3, hs[block], hs[block + 1], ctxs[block], [torch.Generator().manual_seed(3)])
    g.zero_grad(set_to_none=True)
    algo.ldrl_loss(layer).backward()
    expected_w, expected_b = g.weight_op.weight.grad.clone(), g.weight_op.bias.grad.clone()

    split = _ClosedForm.split(g)
    assert split is not None, "LeNet's mirrored feedback blocks must take the fast path"
    layer.generators[0].manual_seed(3)
    fast = _ClosedForm(*split, net.blocks[block], layer)
    with torch.no_grad():
        got = fast.grad(layer, lambda y, x: y)
    torch.testing.assert_close(got, expected_w, rtol=1e-10, atol=1e-12)
    assert expected_b.abs().max() < 1e-12  # the bias cancels in both differences


# ---------------------------------------------------------------- lock-step = per-layer loop
@pytest.mark.parametrize("arch", ["lenet", "fc"])
def test_lockstep_equals_the_per_layer_loop(arch):
    net = small_lenet() if arch == "lenet" else small_fc()
    cfg = lenet_config() if arch == "lenet" else config(feedback_iterations=[5, 2, 4])
    shape = (3, 12, 12) if arch == "lenet" else (16,)
    fast = ScalingDTP(cfg, net, 1)
    slow = copy.deepcopy(fast)  # same initial feedback weights
    slow.cfg = dataclasses.replace(cfg, lockstep=False)
    assert fast.cfg.lockstep and not slow.cfg.lockstep
    start = {k: v.clone() for k, v in fast.state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    batches = [(torch.randn(8, *shape, generator=gen, dtype=torch.float64), torch.randint(0, 5, (8,), generator=gen))
               for _ in range(3)]
    for algo in (fast, slow):
        torch.manual_seed(1)
        for x, y in batches:
            algo.train_step(x, y)
    moved = 0.0
    for (name, p), q in zip(fast.state_dict().items(), slow.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-10, msg=name)
        if name.startswith("feedback") and name.endswith("weight"):
            moved = max(moved, (p - start[name]).abs().max().item())
    assert moved > 1e-3, "feedback weights must actually train"
    for p, q in zip(fast.optimizers["feedback"].state.values(), slow.optimizers["feedback"].state.values()):
        torch.testing.assert_close(p["momentum_buffer"], q["momentum_buffer"], rtol=0, atol=1e-10)


def test_a_finished_layer_is_left_alone_while_others_iterate():
    """K = [1, 0, 4]: layer 1's parameters and momentum are those of exactly one step."""
    net = small_fc()
    x, y = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    results = []
    template = ScalingDTP(config(feedback_iterations=[1, 0, 4]), net, 1)
    for ks in ([1, 0, 4], [1, 0, 0]):
        algo = copy.deepcopy(template)
        algo.iterations = dict(zip(algo.feedback_blocks, ks))
        torch.manual_seed(0)
        algo.train_feedback(x, y)
        results.append(algo)
    a, b = results
    for key in a.feedback["1"].state_dict():
        assert torch.equal(a.feedback["1"].state_dict()[key], b.feedback["1"].state_dict()[key])
    for p, q in zip(a.feedback["1"].parameters(), b.feedback["1"].parameters()):
        assert torch.equal(a.optimizers["feedback"].state[p]["momentum_buffer"],
                           b.optimizers["feedback"].state[q]["momentum_buffer"])
    assert not any(p in a.optimizers["feedback"].state for p in a.feedback["2"].parameters()), \
        "K = 0: no step, no momentum"


def test_momentum_buffers_persist_across_batches():
    """One iteration per batch: buffer₂ = 0.9·buffer₁ + grad₂ (not a fresh buffer)."""
    net = small_fc()
    lr = 1e-2
    algo = ScalingDTP(config(feedback_iterations=1), net, 1)
    opt = algo.optimizers["feedback"]
    x1, y1, x2, y2 = torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,)), \
        torch.randn(8, 16, dtype=torch.float64), torch.randint(0, 5, (8,))
    torch.manual_seed(0)
    algo.train_step(x1, y1)
    weight = algo.feedback["1"].weight_op.weight
    buf1 = opt.state[weight]["momentum_buffer"].clone()
    fresh = copy.deepcopy(algo)
    fresh.optimizers["feedback"].state.clear()  # what a re-created optimizer would do
    for a in (algo, fresh):
        before = a.feedback["1"].weight_op.weight.detach().clone()
        torch.manual_seed(1)
        a.train_step(x2, y2)
        a.step_taken = (before - a.feedback["1"].weight_op.weight.detach()) / lr
    assert algo.optimizers["feedback"] is opt
    grad2 = fresh.step_taken  # a fresh buffer is the gradient itself
    torch.testing.assert_close(opt.state[weight]["momentum_buffer"], 0.9 * buf1 + grad2)
    torch.testing.assert_close(algo.step_taken, 0.9 * buf1 + grad2)


# ---------------------------------------------------------------- what L-DRL learns
def jacobian_angle(algo: ScalingDTP, hs: list[torch.Tensor], i: int, samples: int = 4) -> float:
    """Mean over samples of the angle (degrees) between the flattened J_g(s_{i+1}) and J_f(s_i)ᵀ."""
    block, g = algo.network.blocks[i], algo.feedback[str(i)]
    angles = []
    for n in range(samples):
        x = hs[i][n:n + 1]
        jf = torch.autograd.functional.jacobian(lambda h: block(h), x).reshape(hs[i + 1][0].numel(), x.numel())
        jg = torch.autograd.functional.jacobian(lambda h: g(h), hs[i + 1][n:n + 1]).reshape(x.numel(), -1)
        cos = torch.nn.functional.cosine_similarity(jg.flatten(), jf.T.flatten(), dim=0).clamp(-1, 1)
        angles.append(math.degrees(math.acos(cos.item())))
    return sum(angles) / len(angles)


def test_ldrl_aligns_feedback_jacobians_with_the_forward_transpose():
    torch.manual_seed(0)
    net = small_fc(widths=(20, 20, 20), dtype=torch.float64, activation="elu")
    algo = ScalingDTP(config(feedback_iterations=50, noise=0.1,
                             feedback_optimizer=OptimizerConfig(name="sgd", lr=5e-2, momentum=0.9)), net, 1)
    x = torch.randn(64, 16, dtype=torch.float64)
    y = torch.randint(0, 5, (64,))
    hs = net.activations(x)
    before = [jacobian_angle(algo, hs, i) for i in algo.feedback_blocks]
    for _ in range(6):
        algo.train_feedback(x, y)
    after = [jacobian_angle(algo, hs, i) for i in algo.feedback_blocks]
    assert all(b > 60 for b in before), before
    assert all(a < 30 for a in after), (before, after)




@pytest.mark.realdata
def test_scaling_dtp_reduces_training_loss_on_fashion_mnist(fmnist_subset):
    x, y = fmnist_subset
    torch.manual_seed(0)
    net = build_fc(FCArchConfig(hidden=[128, 128], activation="elu"), (784,), 10)
    algo = ScalingDTP(config(feedback_iterations=5, noise=0.1, target_step=0.5,
                             optimizer=OptimizerConfig(name="sgd", lr=0.01, momentum=0.9, weight_decay=1e-4),
                             feedback_optimizer=OptimizerConfig(name="sgd", lr=1e-2, momentum=0.9)), net, 1)
    assert propagated_blocks(algo) == [0, 1]
    # the same run with both hidden blocks frozen (only the output block learns) is the baseline;
    # measured: 2.895 → 0.518, frozen 0.734
    start, end, frozen_end = loss_against_frozen(algo, x, y, steps=200)
    assert end < start - 1.5, (start, end)
    assert end < frozen_end - 0.12, (start, end, frozen_end)


# ---------------------------------------------------------------- configuration
def test_per_layer_lists_must_fit_the_network():
    with pytest.raises(ConfigError, match="feedback_iterations"):
        ScalingDTP(config(feedback_iterations=[1, 2]), small_fc(), 1)  # 3 feedback layers
    algo = ScalingDTP(config(feedback_iterations=[41, 51, 24]), small_lenet(), 1)
    assert algo.iterations == {1: 41, 2: 51, 3: 24}


def test_schema_rejects_bad_iterations():
    with pytest.raises(ConfigError, match="feedback_iterations"):
        config(feedback_iterations=[1, -1]).validate()
    with pytest.raises(ConfigError, match="feedback_iterations"):
        config(feedback_iterations=2.5).validate()
    config(feedback_iterations=[0, 3]).validate()


@pytest.mark.parametrize("name", ["scaling_dtp", "l_drl"])
def test_presets_compose(name):
    from conftest import compose

    from dtp_bench.config import validate

    lenet = validate(compose([f"algorithm={name}", "arch=lenet", "dataset=cifar10"]))
    a = lenet.algorithm
    assert (a.name, a.feedback_iterations, a.target_step, lenet.trainer.batch_size) == (name, [41, 51, 24], 0.4655, 256)
    assert (a.optimizer.name, a.optimizer.momentum, a.optimizer.weight_decay, a.optimizer.schedule,
            a.optimizer.cosine_t_max, a.optimizer.cosine_eta_min) == ("sgd", 0.9, 1e-4, "cosine", 85, 1e-5)
    vgg = validate(compose([f"algorithm={name}", "arch=vgg", "dataset=cifar10"]))
    assert vgg.algorithm.feedback_iterations == [20, 30, 35, 55, 20] and vgg.trainer.batch_size == 128
    fc = validate(compose([f"algorithm={name}", "arch=fc"]))
    assert fc.algorithm.feedback_iterations == 20


def test_trainer_runs_scaling_dtp(data_root, tmp_path):
    from conftest import read_metrics, run_config, tiny_overrides

    overrides = tiny_overrides(data_root, epochs=1, algorithm="scaling_dtp") + ["algorithm.feedback_iterations=2"]
    run_config(overrides, tmp_path)
    summary = json.loads((tmp_path / SUMMARY).read_text())
    assert (summary["status"], summary["epochs_completed"], summary["diverged_epoch"]) == ("completed", 1, None)
    assert summary["parameters"]["feedback"] > 0
    rows = read_metrics(tmp_path)
    assert [r["epoch"] for r in rows] == [1]
    assert math.isfinite(rows[0]["train_loss"]) and 0 <= rows[0]["test_error"] <= 100


def test_detached_reference_drops_r_from_the_gradient():
    """FW-DTP's code's L-DRL (reference=detached): the gradient is that of the same loss with
    r = g(y) a constant; with r attached (Ernoult) it differs."""
    torch.manual_seed(0)
    net = small_fc(widths=(3, 2), activation="elu")
    grads = {}
    for reference in ("attached", "detached"):
        algo = ScalingDTP(config(noise=0.3, reference=reference), net, 1)
        torch.manual_seed(5)
        for p in algo.feedback.parameters():
            torch.nn.init.normal_(p, std=0.5)
        g = algo.feedback["1"]
        x = torch.randn(7, 3, dtype=torch.float64)
        with torch.no_grad():
            y, ctx = net.blocks[1].forward_ctx(x)
        layer = _Layer(1, 1, 0.3, x, y, ctx, [torch.Generator().manual_seed(11)])
        (grad,) = torch.autograd.grad(algo.ldrl_loss(layer), g.weight_op.weight)
        grads[reference] = grad
        if reference == "detached":
            gen = torch.Generator().manual_seed(11)
            dx = 0.3 * torch.randn(x.shape, generator=gen, dtype=torch.float64)
            dy = 0.3 * torch.randn(y.shape, generator=gen, dtype=torch.float64)
            r = g(y, ctx).detach()
            with torch.no_grad():
                y_noise, _ = net.blocks[1].forward_ctx(x + dx)
            by_hand = (-2.0 * (dx * (g(y_noise, ctx) - r)).sum() + (g(y + dy, ctx) - r).pow(2).sum()) / 7
            (expected,) = torch.autograd.grad(by_hand, g.weight_op.weight)
            torch.testing.assert_close(grad, expected)
    assert not torch.allclose(grads["attached"], grads["detached"])


def test_l_drl_shibuya_code_composes_as_that_code():
    from conftest import compose

    from dtp_bench.config import validate

    a = validate(compose(["algorithm=l_drl_shibuya_code"])).algorithm
    assert (a.reference, a.feedback_placement, a.feedback_bias, a.feedback_init) == ("detached", "output", False, "uniform")
    assert (a.feedback_iterations, a.feedback_pretrain_epochs) == (5, 5)
    assert a.optimizer.name == a.feedback_optimizer.name == "sgd" and a.optimizer.schedule == "none"
