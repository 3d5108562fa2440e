"""PyTorch Lightning: :class:`MetaLRCallback` feeds a MetaLRScheduler the training loss.

Lightning steps a ``{"interval": "step"}`` scheduler with ``scheduler.step()`` after each
optimizer step, with no loss. The callback observes the loss of every micro-batch in
``on_before_backward`` (so before that call), undoing the ``1 / accumulate_grad_batches``
scaling Lightning applies under automatic optimisation, so the scheduler is fed the mean loss
of each optimizer step. Under ``precision="16-mixed"`` it hands the scheduler Lightning's
``GradScaler``, so steps the scaler skips are not fed. The callback keeps no state of its own:
the scheduler's ``state_dict`` (saved in Lightning's checkpoints) holds everything, so a run
resumed from a checkpoint continues the same LR trajectory.

Example::

    class Model(L.LightningModule):
        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.1)
            sched = MetaLRScheduler.from_pretrained("metalr-unroll-hypergradient-hold", opt, total_steps=1000)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    L.Trainer(max_steps=1000, callbacks=[MetaLRCallback()]).fit(Model(), loader)
"""

from __future__ import annotations

from metalr.errors import MetalrError
from metalr.integrations import meta_schedulers, require

require("lightning", "lightning")

from lightning.pytorch import Callback  # noqa: E402  (after the check that it is installed)


class MetaLRCallback(Callback):
    """Feeds every MetaLRScheduler of the module's ``configure_optimizers`` the training loss.

    Raises:
        MetalrError: at the start of training if no MetaLRScheduler is configured, or if one
            is configured with ``"interval": "epoch"`` (it must step once per optimizer step).
    """

    def __init__(self):
        self._schedulers = []

    def on_train_start(self, trainer, pl_module) -> None:
        self._schedulers = []
        for config in trainer.lr_scheduler_configs:
            found = meta_schedulers(config.scheduler)
            if found and config.interval != "step":
                raise MetalrError('a MetaLRScheduler must be configured with "interval": "step" '
                                  f'(it reads the loss of every optimizer step), got {config.interval!r}')
            self._schedulers += found
        if not self._schedulers:
            raise MetalrError("MetaLRCallback found no MetaLRScheduler among the schedulers that "
                              "configure_optimizers returned; return {'optimizer': opt, "
                              "'lr_scheduler': {'scheduler': sched, 'interval': 'step'}}")
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        for sched in self._schedulers:
            if sched.scaler is None:
                sched.scaler = scaler

    def on_before_backward(self, trainer, pl_module, loss) -> None:
        # Automatic optimisation divides each micro-batch loss by accumulate_grad_batches
        # (also in a short last window) before backward; manual optimisation passes it as is.
        if pl_module.automatic_optimization and trainer.accumulate_grad_batches != 1:
            loss = loss.detach() * trainer.accumulate_grad_batches
        for sched in self._schedulers:
            sched.observe(loss)
