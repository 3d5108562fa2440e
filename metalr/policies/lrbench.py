"""LRBench's thirteen learning-rate functions as torch schedulers.

Paper: Y. Wu, L. Liu, J. Bae, K.-H. Chow, A. Iyengar, C. Pu, W. Wei, L. Yu, Q. Zhang,
"Demystifying Learning Rate Policies for High Accuracy Training of Deep Neural Networks",
IEEE BigData 2019 (code: git-disl/LRBench).

Rule. ``t`` is the number of completed optimizer steps (``last_epoch``; 0 for the first step),
``k0`` is each param group's ``initial_lr``, so every function below is a multiplier of the
base LR and param groups keep their ratio:

====== =====================================================================
fix    k0
step   k0 * gamma^floor(t / l)
nstep  k0 * gamma^i  for  l_{i-1} <= t < l_i  (``milestones`` l_1 < l_2 < ...; l_0 = 0)
exp    k0 * gamma^t
inv    k0 * (1 + gamma * t)^(-p)
poly   k0 * max(0, 1 - t / l)^p     (clamped at 0 after t = l)
====== =====================================================================

The cyclic family moves between ``k0`` and ``k1``: ``lr = k0 + (k1 - k0) * g(t)``. Here ``k1``
is given as a ratio of the group's LR, ``k1 = ratio * k0``, so it works for any base LR and for
several param groups (LRBench's own examples have k1 above k0, e.g. k0 = 0.05, k1 = 0.3; a
``ratio`` below 1 is accepted and puts ``k1`` under ``k0``). ``l`` is the half period:

====== =====================================================================
tri    g = (2/pi) * |arcsin(sin(pi * t / (2l)))|   (k0 at t = 0, k1 at t = l)
tri2   g = tri / 2^floor(t / (2l))                 (amplitude halves each cycle)
triexp g = gamma^t * tri
sin    g = |sin(pi * t / (2l))|
sin2   g = sin / 2^floor(t / (2l))
sinexp g = gamma^t * sin
cos    g = (1 + cos(pi * t / l)) / 2              (k1 at t = 0, k0 at t = l)
====== =====================================================================

Defaults scale with the budget ``T`` so that a curve has the same shape for any run length:
``step`` drops twice (l = ceil(T/3)), ``nstep`` at T/2 and 3T/4, ``exp`` and the ``*exp``
amplitudes reach 1% at T, ``inv`` has gamma = 10/T, ``poly`` and ``cos`` span the run, and the
other cyclic functions make four cycles. Pass any parameter to override it.
"""

from __future__ import annotations

import math

from metalr.lr_policy import LRPolicy
from metalr.policies.params import Auto, budget_part, number, resolve, step_list, steps

THIRD = budget_part(3)
EIGHTH = budget_part(8)
WHOLE = Auto("T", lambda T: max(1, T))
TO_ONE_PERCENT = Auto("0.01^(1/T)", lambda T: 0.01 ** (1 / max(1, T)))
TEN_OVER_T = Auto("10/T", lambda T: 10 / max(1, T))
HALF_AND_THREE_QUARTERS = Auto("T/2 and 3T/4",
                               lambda T: tuple(sorted({max(1, T // 2), max(1, 3 * T // 4)})))


class Formula(LRPolicy):
    """A closed-form multiplier :meth:`at` of the step index ``t = last_epoch``."""

    def multiplier(self) -> float:
        return self.at(self.last_epoch)

    def at(self, t: int) -> float:
        raise NotImplementedError


class Fix(Formula):
    """FIX: the base LR throughout."""

    def __init__(self, optimizer, total_steps, *, last_epoch=-1):
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return 1.0


class Step(Formula):
    """STEP: k0 * gamma^floor(t / l)."""

    def __init__(self, optimizer, total_steps, *, gamma=0.1, l=THIRD, last_epoch=-1):
        self.gamma = number("gamma", gamma, 0, 1, low_open=True)
        self.l = steps("l", resolve(l, total_steps))
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return self.gamma ** (t // self.l)


class NStep(Formula):
    """NSTEP: k0 * gamma^i for l_{i-1} <= t < l_i."""

    def __init__(self, optimizer, total_steps, *, gamma=0.1, milestones=HALF_AND_THREE_QUARTERS,
                 last_epoch=-1):
        self.gamma = number("gamma", gamma, 0, 1, low_open=True)
        self.milestones = step_list("milestones", resolve(milestones, total_steps))
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return self.gamma ** sum(t >= m for m in self.milestones)


class Exp(Formula):
    """EXP: k0 * gamma^t."""

    def __init__(self, optimizer, total_steps, *, gamma=TO_ONE_PERCENT, last_epoch=-1):
        self.gamma = number("gamma", resolve(gamma, total_steps), 0, 1, low_open=True)
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return self.gamma ** t


class Inv(Formula):
    """INV: k0 * (1 + gamma * t)^(-p)."""

    def __init__(self, optimizer, total_steps, *, gamma=TEN_OVER_T, p=0.75, last_epoch=-1):
        self.gamma = number("gamma", resolve(gamma, total_steps), 0)
        self.p = number("p", p, 0)
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return (1 + self.gamma * t) ** -self.p


class Poly(Formula):
    """POLY: k0 * max(0, 1 - t / l)^p."""

    def __init__(self, optimizer, total_steps, *, p=2.0, l=WHOLE, last_epoch=-1):
        self.p = number("p", p, 0, low_open=True)
        self.l = steps("l", resolve(l, total_steps))
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return max(0.0, 1 - t / self.l) ** self.p


class Cyclic(Formula):
    """lr = k0 + (k1 - k0) * g(t) with k1 = ratio * k0; subclasses define :meth:`g`."""

    def __init__(self, optimizer, total_steps, *, ratio=4.0, l=EIGHTH, last_epoch=-1):
        self.ratio = number("ratio", ratio, 0)
        self.l = steps("l", resolve(l, total_steps))
        super().__init__(optimizer, last_epoch)

    def at(self, t):
        return 1 + (self.ratio - 1) * self.g(t)

    def g(self, t: int) -> float:
        raise NotImplementedError

    def tri(self, t):
        return (2 / math.pi) * abs(math.asin(math.sin(math.pi * t / (2 * self.l))))

    def sin(self, t):
        return abs(math.sin(math.pi * t / (2 * self.l)))

    def halving(self, t):
        return 2.0 ** -(t // (2 * self.l))


class DecayingCyclic(Cyclic):
    """A cyclic function whose amplitude also decays as gamma^t."""

    def __init__(self, optimizer, total_steps, *, ratio=4.0, l=EIGHTH, gamma=TO_ONE_PERCENT,
                 last_epoch=-1):
        self.gamma = number("gamma", resolve(gamma, total_steps), 0, 1, low_open=True)
        super().__init__(optimizer, total_steps, ratio=ratio, l=l, last_epoch=last_epoch)


class Tri(Cyclic):
    """TRI: triangular cycles between k0 and k1."""

    def g(self, t):
        return self.tri(t)


class Tri2(Cyclic):
    """TRI2: triangular cycles whose amplitude halves every cycle."""

    def g(self, t):
        return self.tri(t) * self.halving(t)


class TriExp(DecayingCyclic):
    """TRIEXP: triangular cycles with amplitude gamma^t."""

    def g(self, t):
        return self.gamma ** t * self.tri(t)


class Sin(Cyclic):
    """SIN: |sine| cycles between k0 and k1."""

    def g(self, t):
        return self.sin(t)


class Sin2(Cyclic):
    """SIN2: sine cycles whose amplitude halves every cycle."""

    def g(self, t):
        return self.sin(t) * self.halving(t)


class SinExp(DecayingCyclic):
    """SINEXP: sine cycles with amplitude gamma^t."""

    def g(self, t):
        return self.gamma ** t * self.sin(t)


class Cos(Cyclic):
    """COS: from k1 down to k0 over l steps along a half cosine (then back up)."""

    def __init__(self, optimizer, total_steps, *, ratio=4.0, l=WHOLE, last_epoch=-1):
        super().__init__(optimizer, total_steps, ratio=ratio, l=l, last_epoch=last_epoch)

    def g(self, t):
        return (1 + math.cos(math.pi * t / self.l)) / 2


FUNCTIONS = {
    "fix": (Fix, "LRBench FIX: the base LR k0 throughout"),
    "step": (Step, "LRBench STEP: k0 * gamma^floor(t/l)"),
    "nstep": (NStep, "LRBench NSTEP: k0 * gamma^i after the i-th milestone"),
    "exp": (Exp, "LRBench EXP: k0 * gamma^t"),
    "inv": (Inv, "LRBench INV: k0 * (1 + gamma*t)^-p"),
    "poly": (Poly, "LRBench POLY: k0 * (1 - t/l)^p"),
    "tri": (Tri, "LRBench TRI: triangular cycles k0 -> k1 = ratio*k0, half period l"),
    "tri2": (Tri2, "LRBench TRI2: TRI with the amplitude halved every cycle"),
    "triexp": (TriExp, "LRBench TRIEXP: TRI with amplitude gamma^t"),
    "sin": (Sin, "LRBench SIN: sine cycles k0 -> k1 = ratio*k0, half period l"),
    "sin2": (Sin2, "LRBench SIN2: SIN with the amplitude halved every cycle"),
    "sinexp": (SinExp, "LRBench SINEXP: SIN with amplitude gamma^t"),
    "cos": (Cos, "LRBench COS: k1 = ratio*k0 down to k0 over l steps along a half cosine"),
}
