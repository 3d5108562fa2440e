"""The LR-free optimizers a user would pick instead of a schedule, as metalr policies.

They replace the optimizer (``replaces_optimizer = True``): :func:`metalr.train` asks the
policy for its optimizer instead of building the task's SGD/Adam, and attaches no scheduler.
The task's momentum and weight decay are passed on where the optimizer has them; the task's
base LR is not (each peer has its own ``lr`` parameter, 1.0 for the LR-free ones, meaning "as
estimated"). They are the optional extra ``pip install metalr[peers]``.

- ``sf-sgd``, ``sf-adamw``: Schedule-Free SGD / AdamW (A. Defazio, X. Yang, H. Mehta,
  K. Mishchenko, A. Khaled, A. Cutkosky, "The Road Less Scheduled", NeurIPS 2024; package
  ``schedulefree``). Rule: gradients are taken at ``y = (1 - beta) z + beta x``, ``z`` takes the
  SGD/AdamW step, and ``x`` is the running (LR-weighted) average of ``z``, which is what should
  be evaluated. The optimizer must be switched with ``opt.train()`` before training steps and
  ``opt.eval()`` before evaluation; :class:`ScheduleFree` does this in ``train_mode`` and
  ``eval_mode``. BatchNorm caveat: running statistics are accumulated while the weights are at
  ``y``, not at the evaluated ``x``, so a model with BatchNorm needs a refresh pass (a few
  training batches forwarded in train mode under ``torch.no_grad()`` after ``opt.eval()``)
  before evaluation. The trainer's evaluation hook has no data to do that, so the policy warns
  once when the model has BatchNorm layers; metalr's MNIST-1D models have none. SGD wants a
  10-50x larger LR than plain SGD: ``sf-sgd`` defaults to lr 1.0.
- ``prodigy``: Prodigy (K. Mishchenko, A. Defazio, "Prodigy: An Expeditiously Adaptive
  Parameter-Free Learner", ICML 2024; package ``prodigyopt``): Adam whose step size ``d * lr``
  grows from ``d0`` to an estimate of the distance to the solution.
- ``dadapt-sgd``, ``dadapt-adam``: D-Adaptation (A. Defazio, K. Mishchenko, "Learning-Rate-Free
  Learning by D-Adaptation", ICML 2023; package ``dadaptation``): a lower bound ``d`` on the
  distance to the solution, grown from gradient inner products, sets the step size.
- ``dog``: DoG (M. Ivgi, O. Hinder, Y. Carmon, "DoG is SGD's Best Friend", ICML 2023; package
  ``dog-optimizer``): step size ``max_i ||x_i - x_0|| / sqrt(sum_i ||g_i||^2)``, with the
  ``PolynomialDecayAverager`` (gamma = 8) stepped after every optimizer step and evaluated in
  place of the model, as the authors recommend. ``layerwise=true`` uses LDoG.
"""

from __future__ import annotations

import importlib
import math
import warnings

from torch import nn

from metalr.errors import MetalrError
from metalr.policies.base import Policy
from metalr.policies.params import flag, number, steps


def require(module: str, package: str, policy: str):
    """Import ``module`` or raise a MetalrError naming the package and the extra to install."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MetalrError(f"policy {policy!r} needs the package {package!r}, which is not "
                          "installed: pip install metalr[peers]") from None


class Peer(Policy):
    """An LR-free optimizer as a policy: builds the optimizer, attaches no scheduler."""

    replaces_optimizer = True
    module = ""
    package = ""

    def __init__(self, name: str):
        self.name = name
        self.lib = require(self.module, self.package, name)


class ScheduleFree(Peer):
    """Switches the optimizer between train and eval mode around evaluation."""

    module = package = "schedulefree"

    def __init__(self, name, lr, warmup):
        self.lr = number("lr", lr, 0, low_open=True)
        self.warmup = steps("warmup", warmup, minimum=0)
        self._warned = False
        super().__init__(name)

    def train_mode(self, optimizer):
        optimizer.train()

    def eval_mode(self, optimizer, model):
        optimizer.eval()
        if not self._warned and any(isinstance(m, nn.modules.batchnorm._BatchNorm)
                                    for m in model.modules()):
            self._warned = True
            warnings.warn(f"{self.name}: the model has BatchNorm layers whose running statistics "
                          "were gathered at the training point, not at the evaluated weights; "
                          "refresh them with a few training batches after optimizer.eval()",
                          stacklevel=2)


class SFSGD(ScheduleFree):
    """Schedule-Free SGD with the task's momentum."""

    def __init__(self, name="sf-sgd", *, lr=1.0, warmup=0):
        super().__init__(name, lr, warmup)

    def make_optimizer(self, params, optimizer, lr, momentum, weight_decay):
        return self.lib.SGDScheduleFree(params, lr=self.lr, momentum=momentum or 0.9,
                                        weight_decay=weight_decay, warmup_steps=self.warmup)


class SFAdamW(ScheduleFree):
    """Schedule-Free AdamW."""

    def __init__(self, name="sf-adamw", *, lr=0.0025, warmup=0):
        super().__init__(name, lr, warmup)

    def make_optimizer(self, params, optimizer, lr, momentum, weight_decay):
        return self.lib.AdamWScheduleFree(params, lr=self.lr, weight_decay=weight_decay,
                                          warmup_steps=self.warmup)


class ProdigyPeer(Peer):
    """Prodigy (Adam with an estimated step size)."""

    module, package = "prodigyopt", "prodigyopt"

    def __init__(self, name="prodigy", *, lr=1.0, d_coef=1.0):
        self.lr = number("lr", lr, 0, low_open=True)
        self.d_coef = number("d_coef", d_coef, 0, low_open=True)
        super().__init__(name)

    def make_optimizer(self, params, optimizer, lr, momentum, weight_decay):
        return self.lib.Prodigy(params, lr=self.lr, d_coef=self.d_coef, weight_decay=weight_decay)


class DAdaptation(Peer):
    """D-Adaptation; ``growth_rate`` caps how fast the estimate ``d`` may grow per step."""

    module, package = "dadaptation", "dadaptation"
    adam = False

    def __init__(self, name, lr, growth_rate):
        self.lr = number("lr", lr, 0, low_open=True)
        self.growth_rate = number("growth_rate", growth_rate, 1, allow_inf=True)
        super().__init__(name)

    def make_optimizer(self, params, optimizer, lr, momentum, weight_decay):
        common = {"lr": self.lr, "weight_decay": weight_decay, "growth_rate": self.growth_rate}
        if self.adam:
            return self.lib.DAdaptAdam(params, decouple=True, **common)
        return self.lib.DAdaptSGD(params, momentum=momentum, **common)


class DAdaptSGD(DAdaptation):
    """D-Adaptation SGD with the task's momentum."""

    def __init__(self, name="dadapt-sgd", *, lr=1.0, growth_rate=math.inf):
        super().__init__(name, lr, growth_rate)


class DAdaptAdam(DAdaptation):
    """D-Adaptation Adam (decoupled weight decay)."""

    adam = True

    def __init__(self, name="dadapt-adam", *, lr=1.0, growth_rate=math.inf):
        super().__init__(name, lr, growth_rate)


class DoGPeer(Peer):
    """DoG (or LDoG) with polynomial-decay averaging of the weights for evaluation."""

    module, package = "dog", "dog-optimizer"

    def __init__(self, name="dog", *, lr=1.0, reps_rel=1e-6, gamma=8.0, layerwise=False):
        self.lr = number("lr", lr, 0, low_open=True)
        self.reps_rel = number("reps_rel", reps_rel, 0, low_open=True)
        self.gamma = number("gamma", gamma, 0)
        self.layerwise = flag("layerwise", layerwise)
        self.averager = None
        super().__init__(name)

    def make_optimizer(self, params, optimizer, lr, momentum, weight_decay):
        self.averager = None
        cls = self.lib.LDoG if self.layerwise else self.lib.DoG
        return cls(params, lr=self.lr, reps_rel=self.reps_rel, weight_decay=weight_decay)

    def after_step(self, optimizer, model):
        if self.averager is None or self.averager.model is not model:
            self.averager = self.lib.PolynomialDecayAverager(model, gamma=self.gamma)
        self.averager.step()

    def eval_model(self, model: nn.Module) -> nn.Module:
        return model if self.averager is None else self.averager.averaged_model


PEERS = {
    "sf-sgd": (SFSGD, "Schedule-Free SGD (schedulefree); train/eval switching around evaluation"),
    "sf-adamw": (SFAdamW, "Schedule-Free AdamW (schedulefree); train/eval switching"),
    "prodigy": (ProdigyPeer, "Prodigy (prodigyopt): Adam with an estimated step size"),
    "dadapt-sgd": (DAdaptSGD, "D-Adaptation SGD (dadaptation)"),
    "dadapt-adam": (DAdaptAdam, "D-Adaptation Adam (dadaptation)"),
    "dog": (DoGPeer, "DoG (dog-optimizer) with its polynomial-decay weight averager"),
}
