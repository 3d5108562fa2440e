"""Hugging Face Trainer: :class:`MetaLRTrainerMixin` feeds a MetaLRScheduler the training loss.

The ``Trainer`` steps the scheduler given in ``optimizers=(optimizer, scheduler)`` with
``scheduler.step()`` after each optimizer step, with no loss, and skips that call when the
optimizer step was skipped (fp16 overflow). Callbacks never see the per-step loss, so this is
a mixin for the Trainer class: its ``training_step`` observes each micro-batch's loss, undoing
the Trainer's division by the number of accumulated micro-batches (or, when the model
normalises by ``num_items_in_batch``, reproducing the Trainer's own sum), so the scheduler is
fed the loss the Trainer logs for that optimizer step. Losses of a step whose scheduler step
the Trainer skipped are dropped. Resuming from ``checkpoint-N`` restores the scheduler's
``state_dict`` (saved by the Trainer as ``scheduler.pt``), so the LR trajectory continues
unchanged; the Trainer's ``learning_rate`` log reads ``get_last_lr()``.

Example::

    class Trainer(MetaLRTrainerMixin, transformers.Trainer):
        pass

    opt = torch.optim.AdamW(model.parameters(), lr=5e-4)
    sched = MetaLRScheduler.from_pretrained("metalr-unroll-hypergradient-hold", opt, total_steps=args.max_steps)
    Trainer(model=model, args=args, train_dataset=ds, optimizers=(opt, sched)).train()
"""

from __future__ import annotations

from metalr.integrations import meta_schedulers, require

require("transformers", "hf")


class MetaLRTrainerMixin:
    """Put before ``transformers.Trainer`` in the bases; see the module docs."""

    _metalr_step: int | None = None

    def training_step(self, model, inputs, num_items_in_batch=None):
        loss = super().training_step(model, inputs, num_items_in_batch)
        schedulers = meta_schedulers(self.lr_scheduler)
        if self.state.global_step != self._metalr_step:
            # The first micro-batch of an optimizer step: whatever is still pending belongs
            # to a step the Trainer skipped (it then does not call scheduler.step()).
            self._metalr_step = self.state.global_step
            for sched in schedulers:
                sched.drop_observed()
        scaled = loss * self.current_gradient_accumulation_steps
        for sched in schedulers:
            sched.observe(scaled)
        return loss
