"""Server optimizers: how a round of aggregated entries moves the global model.

The plain server (``none``) applies a round's entries as they are: ``theta += c_j z_j``.
A stateful server treats the round's whole move ``delta_r = sum_j c_j z_j`` (what the
plain server would apply) as a pseudo-gradient, in the manner of FedOpt (Reddi et al.,
2021), and keeps dense buffers the size of the trainable set:

* ``momentum`` (FedAvgM): ``m = beta m + delta_r``; ``theta += lr m``.
* ``adam`` (FedAdam, with bias correction): ``m = b1 m + (1 - b1) delta_r``,
  ``v = b2 v + (1 - b2) delta_r**2``, ``theta += lr m_hat / (sqrt(v_hat) + tau)``.

The buffers are a deterministic function of the log, so every party that replays the log
round by round with the same code (the server, a client catching up by ``replay``, a
worker re-syncing, ``fedzo evaluate --run``) holds the same buffers and the same model,
bitwise. The uplink is unchanged (scalars for server-chosen seeds); what a client must
keep between rounds grows by the buffers, which is why they are meant for small
trainable sets (prompt, prefix, LoRA). A client caught up by ``full`` receives the
buffers with the weights. ``seed_pool`` catch-up rebuilds the model from pool totals,
which lose the round order the buffers need, so it cannot be combined with them.

A round without entries (no client's reply was applied) leaves model and buffers as
they are. Adam's update needs the round's move twice (for ``m`` and ``v``), so it holds
one more copy while it applies a round.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Protocol

import torch

from fedzo.errors import ConfigError
from fedzo.registry import Registry
from fedzo.zo.log import LogEntry, UpdateLog
from fedzo.zo.perturb import Perturber
from fedzo.zo.replay import apply_entries

STATE_PREFIX = "server-opt/"  # keys of buffers shipped with weights or cached beside them


class ServerOptimizer:
    """The plain server: a round's entries applied in order, no state."""

    name: ClassVar[str] = "none"
    buffers: ClassVar[tuple[str, ...]] = ()  # dense buffers kept between rounds

    def __init__(self, perturber: Perturber) -> None:
        self.perturber = perturber
        self.state: dict[str, list[torch.Tensor]] = {}
        self.steps = 0  # rounds that moved the model
        self.reset()

    @property
    def stateful(self) -> bool:
        """Whether this server keeps buffers between rounds."""
        return bool(self.buffers)

    def reset(self) -> None:
        """Back to the state of round 0 (zero buffers)."""
        self.state = {b: [torch.zeros_like(t).view(-1) for t in self.perturber.params.tensors] for b in self.buffers}
        self.steps = 0

    def apply_round(self, entries: Sequence[LogEntry]) -> None:
        """Move the parameters by one logged round, in place."""
        apply_entries(self.perturber, entries)

    def replay(self, log: UpdateLog, after: int, upto: int) -> None:
        """Apply the log's rounds in ``(after, upto]`` one by one."""
        for r, entries in log.rounds:
            if after < r <= upto:
                self.apply_round(entries)

    # -- the buffers as named tensors (full catch-up, node cache) --------------------------
    def state_tensors(self) -> dict[str, torch.Tensor]:
        """The buffers by ``server-opt/<buffer>/<parameter>`` (and the step count); empty
        for a stateless server."""
        if not self.stateful:
            return {}
        params = self.perturber.params
        out = {f"{STATE_PREFIX}{b}/{n}": self.state[b][i].view_as(t)
               for b in self.buffers for i, n, t in params}
        out[f"{STATE_PREFIX}steps"] = torch.tensor([self.steps], dtype=torch.int64)
        return out

    def load_state(self, tensors: dict[str, torch.Tensor]) -> None:
        """Restore the buffers from :meth:`state_tensors`' names (other keys are ignored)."""
        if not self.stateful:
            return
        missing = [k for k in self.state_tensors() if k not in tensors]
        if missing:
            raise ConfigError(f"server optimizer {self.name!r}: the state lacks {missing[:3]} (a model saved "
                              "without its server-optimizer buffers cannot continue a run that has them)")
        with torch.no_grad():
            for b in self.buffers:
                for i, n, _ in self.perturber.params:
                    self.state[b][i].copy_(tensors[f"{STATE_PREFIX}{b}/{n}"].reshape(-1))
        self.steps = int(tensors[f"{STATE_PREFIX}steps"].reshape(-1)[0])

    def hyperparameters(self) -> dict[str, Any]:
        """Settings that, with the name, rebuild this server (go into the log header)."""
        return {}

    # -- helpers ---------------------------------------------------------------------------
    @torch.no_grad()
    def _accumulate(self, into: list[torch.Tensor], entries: Sequence[LogEntry]) -> None:
        """``into += sum_j c_j z_j`` over ``entries`` in order (the parameters are untouched)."""
        for e in entries:
            coef = e.coefficient

            def add(i: int, start: int, piece: torch.Tensor, z: torch.Tensor, c: float = coef) -> None:
                into[i][start : start + z.numel()].add_(z, alpha=c)

            self.perturber.apply(e.seed, (), final=add)


class ServerMomentum(ServerOptimizer):
    """FedAvgM over the round's move: ``m = beta m + delta_r``; ``theta += lr m``."""

    name = "momentum"
    buffers = ("m",)

    def __init__(self, perturber: Perturber, lr: float = 1.0, momentum: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ConfigError(f"federation.server_optimizer.momentum: {momentum!r} is out of range; "
                              "allowed: 0 <= momentum < 1")
        self.lr, self.momentum = lr, momentum
        super().__init__(perturber)

    @torch.no_grad()
    def apply_round(self, entries: Sequence[LogEntry]) -> None:
        """Fold the round's move into the momentum and move the parameters by it."""
        if not entries:
            return
        m = self.state["m"]
        for buf in m:
            buf.mul_(self.momentum)
        self._accumulate(m, entries)
        for t, buf in zip(self.perturber.params.tensors, m, strict=True):
            t.view(-1).add_(buf, alpha=self.lr)
        self.steps += 1

    def hyperparameters(self) -> dict[str, Any]:
        """The server learning rate and momentum (go into the log header)."""
        return {"lr": self.lr, "momentum": self.momentum}


class ServerAdam(ServerOptimizer):
    """FedAdam over the round's move, with bias correction."""

    name = "adam"
    buffers = ("m", "v")

    def __init__(self, perturber: Perturber, lr: float = 1e-3, beta1: float = 0.9, beta2: float = 0.99,
                 tau: float = 1e-6) -> None:
        for key, b in (("beta1", beta1), ("beta2", beta2)):
            if not 0.0 <= b < 1.0:
                raise ConfigError(f"federation.server_optimizer.{key}: {b!r} is out of range; allowed: 0 <= {key} < 1")
        if not tau > 0:
            raise ConfigError(f"federation.server_optimizer.tau: {tau!r} is out of range; allowed: tau > 0")
        self.lr, self.beta1, self.beta2, self.tau = lr, beta1, beta2, tau
        super().__init__(perturber)

    @torch.no_grad()
    def apply_round(self, entries: Sequence[LogEntry]) -> None:
        """Update the moments with the round's move and move the parameters by Adam's rule."""
        if not entries:
            return
        delta = [torch.zeros_like(t).view(-1) for t in self.perturber.params.tensors]
        self._accumulate(delta, entries)
        self.steps += 1
        b1, b2 = self.beta1, self.beta2
        step_size = self.lr / (1 - b1**self.steps)
        v_corr = math.sqrt(1 - b2**self.steps)
        for t, d, m, v in zip(self.perturber.params.tensors, delta, self.state["m"], self.state["v"], strict=True):
            m.mul_(b1).add_(d, alpha=1 - b1)
            v.mul_(b2).addcmul_(d, d, value=1 - b2)
            t.view(-1).addcdiv_(m, v.sqrt().div_(v_corr).add_(self.tau), value=step_size)

    def hyperparameters(self) -> dict[str, Any]:
        """The server learning rate, betas and eps (go into the log header)."""
        return {"lr": self.lr, "beta1": self.beta1, "beta2": self.beta2, "tau": self.tau}


SERVER_OPTIMIZERS: Registry[type[ServerOptimizer]] = Registry("server optimizer", "federation.server_optimizer.name")
for _cls in (ServerOptimizer, ServerMomentum, ServerAdam):
    SERVER_OPTIMIZERS.add(_cls.name, _cls)


def make_server_optimizer(name: str, perturber: Perturber, **hyper: Any) -> ServerOptimizer:
    """The server optimizer ``name`` over ``perturber``'s parameters."""
    cls = SERVER_OPTIMIZERS.get(name)
    try:
        return cls(perturber, **hyper)
    except TypeError as exc:
        raise ConfigError(f"federation.server_optimizer {name!r}: bad settings {hyper}: {exc}") from None


def split_state(tensors: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(parameters, server-optimizer state) of a mapping that may hold both."""
    params = {k: v for k, v in tensors.items() if not k.startswith(STATE_PREFIX)}
    state = {k: v for k, v in tensors.items() if k.startswith(STATE_PREFIX)}
    return params, state


class GlobalEntries(Protocol):
    """How a catch-up policy says what the global model is (a federation plug-in, seen here
    through this protocol so that the core imports no federation code)."""

    incremental: bool  # the global model is the running sum of the rounds, in order

    def global_entries(self, log: UpdateLog, upto: int) -> list[LogEntry]:
        """The entries that, applied to the initial weights, give the global model of ``upto``."""
        ...


def rebuild(server: ServerOptimizer, policy: GlobalEntries, log: UpdateLog, after: int, upto: int,
            reset: Callable[[], None]) -> None:
    """Move ``server``'s parameters from the global model of round ``after`` to that of
    ``upto``, as the server moved its own: round by round through the server optimizer
    (an incremental policy), or from the initial weights (``reset``) by the policy's global
    entries (the seed pool, whose global model is not a running sum; a stateless server).
    The one recipe of the server, of a client catching up and of ``fedzo evaluate --run``."""
    if policy.incremental and after <= upto:
        server.replay(log, after, upto)
    else:
        reset()
        apply_entries(server.perturber, policy.global_entries(log, upto))
