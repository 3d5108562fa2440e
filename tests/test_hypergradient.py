"""The hypergradient through the unroll equals finite differences, first and second order."""

import numpy as np
import pytest
import torch

from metalr.learned.train.lookahead import lookahead_loss
from metalr.learned.network import CONFIGS, ScheduleNet
from metalr.optim import build_optimizer
from metalr.learned.scheduler import MetaLRScheduler
from metalr.tasks.base import cross_entropy


class _Tiny:
    """Just what lookahead_loss reads from a Task."""

    loss_fn = staticmethod(cross_entropy)


def _setup(optimizer="sgd", steps_before=4, unroll=3, seed=0):
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Tanh(), torch.nn.Linear(6, 3)).double()
    opt = build_optimizer(optimizer, model.parameters(), lr=0.3 if optimizer == "sgd" else 0.05,
                          momentum=0.9, weight_decay=0.01)
    net = ScheduleNet(CONFIGS["default"]).double()
    with torch.no_grad():  # a non-trivial network, so every parameter gets a gradient
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))
    sched = MetaLRScheduler(opt, net, total_steps=50)
    batches = [(torch.randn(8, 4, dtype=torch.float64), torch.randint(0, 3, (8,)))
               for _ in range(steps_before + unroll + 1)]
    for x, y in batches[:steps_before]:  # real steps: optimizer state and scheduler history
        loss = cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss.item())
    return model, opt, sched, batches[steps_before:steps_before + unroll], batches[-1]


def _flat_grad(net, value):
    grads = torch.autograd.grad(value, list(net.parameters()), allow_unused=True)
    return torch.cat([(torch.zeros_like(p) if g is None else g).reshape(-1)
                      for g, p in zip(grads, net.parameters())])


def _directional_fd(fn, net, direction, eps=1e-6):
    params = list(net.parameters())
    sizes = [p.numel() for p in params]

    def shifted(sign):
        with torch.no_grad():
            for p, d in zip(params, direction.split(sizes)):
                p.add_(sign * eps * d.view_as(p))
        value = fn().item()
        with torch.no_grad():
            for p, d in zip(params, direction.split(sizes)):
                p.sub_(sign * eps * d.view_as(p))
        return value

    return (shifted(+1) - shifted(-1)) / (2 * eps)


@pytest.mark.parametrize("optimizer, anneal", [("sgd", 0), ("adam", 0), ("adamw", 0), ("sgd", 2)])
def test_second_order_matches_finite_differences(optimizer, anneal):
    model, opt, sched, unroll_batches, val = _setup(optimizer, unroll=3 + anneal)

    def f():
        return lookahead_loss(sched, model, opt, _Tiny, iter(unroll_batches), val, 3,
                              second_order=True, anneal=anneal)

    grad = _flat_grad(sched.net, f())
    assert grad.abs().max() > 1e-6
    gen = torch.Generator().manual_seed(1)
    for _ in range(3):
        d = torch.randn(grad.shape, generator=gen, dtype=torch.float64)
        fd = _directional_fd(f, sched.net, d)
        assert fd == pytest.approx(float(grad @ d), rel=1e-5, abs=1e-9)


def _first_order_surrogate(sched, model, opt, unroll_batches, val):
    """SGD-momentum unroll written out by hand with the model gradients and the losses the
    network reads held at their values on the current trajectory: the function whose exact
    derivative the first-order hypergradient is."""
    net, group = sched.net, opt.param_groups[0]
    mu, wd = group["momentum"], group["weight_decay"]
    theta0 = [p.detach().clone() for p in model.parameters()]
    buf0 = [opt.state[p]["momentum_buffer"].clone() for p in model.parameters()]

    def forward(params, x):
        return torch.tanh(x @ params[0].T + params[1]) @ params[2].T + params[3]

    def unroll(record=None):
        f64 = torch.float64
        u, hidden = net.cell(torch.tensor(sched.last_input, dtype=f64),
                             tuple(torch.as_tensor(a, dtype=f64) for a in sched.hidden_before))
        theta, buf, state = list(theta0), list(buf0), dict(sched.features_state)
        recorded = [] if record is None else record
        for k, (x, y) in enumerate(unroll_batches):
            if record is None:
                t = [p.detach().requires_grad_() for p in theta]
                loss = cross_entropy(forward(t, x), y)
                recorded.append((torch.autograd.grad(loss, t), loss.item()))
            grads, loss_value = recorded[k]
            lr = group["initial_lr"] * net.multiplier(u)
            buf = [mu * b + g + wd * p for b, g, p in zip(buf, grads, theta)]
            theta = [p - lr * b for p, b in zip(theta, buf)]
            if k + 1 < len(unroll_batches):
                feats, state = sched.tracker.update(state, loss_value, sched.last_epoch + k + 1,
                                                    sched.total_steps, u)
                u, hidden = net.cell(torch.stack([torch.as_tensor(f, dtype=f64) for f in feats]), hidden)
        return cross_entropy(forward(theta, val[0]), val[1]), recorded

    _, recorded = unroll()
    return lambda: unroll(recorded)[0]


def test_first_order_matches_finite_differences_of_its_surrogate():
    model, opt, sched, unroll_batches, val = _setup("sgd")
    surrogate = _first_order_surrogate(sched, model, opt, unroll_batches, val)
    value = lookahead_loss(sched, model, opt, _Tiny, iter(unroll_batches), val, len(unroll_batches),
                           second_order=False)
    assert value.item() == pytest.approx(surrogate().item(), rel=1e-10)
    grad = _flat_grad(sched.net, value)
    gen = torch.Generator().manual_seed(2)
    for _ in range(3):
        d = torch.randn(grad.shape, generator=gen, dtype=torch.float64)
        fd = _directional_fd(surrogate, sched.net, d)
        assert fd == pytest.approx(float(grad @ d), rel=1e-5, abs=1e-9)


def test_first_and_second_order_differ_beyond_one_step():
    model, opt, sched, unroll_batches, val = _setup("sgd", unroll=4)
    grads = [_flat_grad(sched.net, lookahead_loss(sched, model, opt, _Tiny, iter(unroll_batches), val,
                                                  4, second_order=so)) for so in (False, True)]
    rel = float((grads[0] - grads[1]).norm() / grads[1].norm())
    assert 1e-4 < rel < 1.0


def test_lookahead_leaves_model_optimizer_and_scheduler_untouched():
    model, opt, sched, unroll_batches, val = _setup("adam")
    before = [p.detach().clone() for p in model.parameters()]
    moments = [opt.state[p]["exp_avg"].clone() for p in model.parameters()]
    sched_state = sched.state_dict()
    opt.zero_grad(set_to_none=True)
    lookahead_loss(sched, model, opt, _Tiny, iter(unroll_batches), val, 3, second_order=True).backward()
    assert all(torch.equal(a, p) for a, p in zip(before, model.parameters()))
    assert all(torch.equal(m, opt.state[p]["exp_avg"]) for m, p in zip(moments, model.parameters()))
    assert all(p.grad is None for p in model.parameters())
    assert sched.state_dict() == sched_state


@pytest.mark.parametrize("wd", [0.0, 0.1])
def test_differentiable_adamw_matches_torch_adamw(wd):
    import higher

    torch.manual_seed(0)
    model = torch.nn.Linear(5, 2).double()
    opt = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=wd)
    data = [(torch.randn(6, 5, dtype=torch.float64), torch.randn(6, 2, dtype=torch.float64)) for _ in range(3)]
    with higher.innerloop_ctx(model, opt) as (fmodel, diffopt):
        for x, y in data:
            diffopt.step((fmodel(x) - y).pow(2).mean())
        fast = [p.detach() for p in fmodel.parameters()]
    for x, y in data:
        opt.zero_grad()
        (model(x) - y).pow(2).mean().backward()
        opt.step()
    # higher's Adam adds eps to sqrt(v) before the bias correction, torch after it: agreement to
    # ~1e-7 relative. Coupled (L2) instead of decoupled decay would be off by ~1e-3 here.
    for a, b in zip(fast, model.parameters()):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-6, atol=1e-9)
