"""The scheduler inside real training loops: Lightning, the HF Trainer, DDP (gloo), CUDA.

Each test trains a tiny model for a few dozen optimizer steps with the real library and checks
that the LR moved and equals a plain loop fed the same losses.
"""

import os
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from metalr.errors import MetalrError
from metalr.learned.scheduler import MetaLRScheduler

CKPT = "metalr-mnist1d"


def _data(n=40, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    return x, x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]]) + 0.1 * torch.randn(n, 1, generator=g)


def _plain_lrs(step_losses, total_steps, lr=0.05):
    """LR in effect at each optimizer step of a hand-written loop fed ``step_losses`` (one list
    of micro-batch losses per optimizer step)."""
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = MetaLRScheduler.from_pretrained(CKPT, opt, total_steps=total_steps)
    lrs = []
    for micro in step_losses:
        lrs.append(opt.param_groups[0]["lr"])
        for loss in micro:
            sched.observe(loss)
        opt.step()
        sched.step()
    return lrs


def test_missing_framework_names_the_extra(monkeypatch):
    from metalr.integrations import require

    monkeypatch.setitem(sys.modules, "lightning", None)
    with pytest.raises(MetalrError, match=r"pip install 'metalr\[lightning\]'"):
        require("lightning", "lightning")


# -- Lightning ------------------------------------------------------------------------------

def _lightning():
    """Lightning and this file's module and callback, imported on first use (the DDP workers
    import this file, and need neither Lightning nor Transformers)."""
    L = pytest.importorskip("lightning")

    class Tiny(L.LightningModule):
        def __init__(self, total_steps):
            super().__init__()
            torch.manual_seed(0)
            self.lin = torch.nn.Linear(4, 1)
            self.total_steps = total_steps
            self.losses = []

        def training_step(self, batch, batch_idx):
            x, y = batch
            loss = F.mse_loss(self.lin(x), y)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self):
            opt = torch.optim.SGD(self.parameters(), lr=0.05)
            sched = MetaLRScheduler.from_pretrained(CKPT, opt, total_steps=self.total_steps)
            return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    class RecordLR(L.Callback):
        def __init__(self):
            self.lrs = []

        def on_before_optimizer_step(self, trainer, pl_module, optimizer):
            self.lrs.append(optimizer.param_groups[0]["lr"])

    return L, Tiny, RecordLR


def _fit(tmp_path, callbacks, ckpt_path=None, epochs=2, checkpoints=False):
    L, Tiny, RecordLR = _lightning()
    from lightning.pytorch.callbacks import ModelCheckpoint

    model = Tiny(total_steps=20)
    record = RecordLR()
    extra = [ModelCheckpoint(dirpath=tmp_path, filename="{epoch}", every_n_epochs=1, save_top_k=-1)] \
        if checkpoints else []
    trainer = L.Trainer(max_epochs=epochs, accumulate_grad_batches=2, accelerator="cpu", devices=1,
                        logger=False, enable_progress_bar=False, enable_model_summary=False,
                        enable_checkpointing=checkpoints, callbacks=[*callbacks, record, *extra],
                        default_root_dir=tmp_path)
    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(*_data()), batch_size=2)
    trainer.fit(model, loader, ckpt_path=ckpt_path)
    return model, record.lrs


def test_lightning_callback_feeds_the_mean_loss_and_resumes_identically(tmp_path):
    pytest.importorskip("lightning")
    from metalr.integrations.lightning import MetaLRCallback

    model, lrs = _fit(tmp_path, [MetaLRCallback()], checkpoints=True)  # 20 steps of 2 micro-batches
    assert len(lrs) == 20 and len(set(lrs)) > 15
    pairs = [model.losses[i:i + 2] for i in range(0, 40, 2)]
    assert lrs == _plain_lrs(pairs, total_steps=20)

    _, resumed = _fit(tmp_path / "resumed", [MetaLRCallback()], ckpt_path=tmp_path / "epoch=0.ckpt")
    assert resumed == lrs[10:]


def test_lightning_without_the_callback_warns_that_no_loss_was_seen(tmp_path):
    with pytest.warns(UserWarning, match="no training loss was ever observed"):
        _, lrs = _fit(tmp_path, [], epochs=1)
    assert set(lrs) == {0.05}


# -- Hugging Face Trainer -------------------------------------------------------------------

class _TinyHF(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.lin = torch.nn.Linear(4, 1)
        self.losses = []

    def forward(self, x, labels=None):
        out = self.lin(x)
        loss = F.mse_loss(out, labels)
        self.losses.append(loss.item())
        return {"loss": loss, "logits": out}


def _hf_train(out_dir, resume=None):
    transformers = pytest.importorskip("transformers")
    from metalr.integrations.hf import MetaLRTrainerMixin

    class Trainer(MetaLRTrainerMixin, transformers.Trainer):
        pass

    x, y = _data()
    dataset = [{"x": a, "labels": b} for a, b in zip(x, y)]
    args = transformers.TrainingArguments(
        output_dir=str(out_dir), max_steps=12, per_device_train_batch_size=4,
        gradient_accumulation_steps=2, logging_steps=1, save_strategy="steps", save_steps=6,
        report_to="none", use_cpu=True, seed=0, dataloader_num_workers=0, disable_tqdm=True)
    model = _TinyHF()
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = MetaLRScheduler.from_pretrained(CKPT, opt, total_steps=args.max_steps)
    Trainer(model=model, args=args, train_dataset=dataset, optimizers=(opt, sched)).train(
        resume_from_checkpoint=resume)
    return model, sched


def _logged_lrs(sched_dir):
    import json

    state = json.loads((sched_dir / "trainer_state.json").read_text())
    return [e["learning_rate"] for e in state["log_history"] if "learning_rate" in e]


def test_hf_trainer_mixin_feeds_the_loss_logs_the_lr_and_resumes(tmp_path):
    model, sched = _hf_train(tmp_path / "run")
    pairs = [model.losses[i:i + 2] for i in range(0, 24, 2)]
    expected = _plain_lrs(pairs, total_steps=12)
    logged = _logged_lrs(tmp_path / "run" / "checkpoint-12")
    assert logged == pytest.approx(expected, rel=1e-12)
    assert len(set(expected)) > 8

    _hf_train(tmp_path / "resumed", resume=str(tmp_path / "run" / "checkpoint-6"))
    assert not (tmp_path / "resumed" / "checkpoint-6").exists()
    assert _logged_lrs(tmp_path / "resumed" / "checkpoint-12") == pytest.approx(expected, rel=1e-12)


# -- DDP: two gloo processes ------------------------------------------------------------------

def _ddp_worker(rank, world, init_file, out_dir, steps):
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 1))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    sched = MetaLRScheduler.from_pretrained(CKPT, opt, total_steps=steps)
    x, y = _data(n=8 * steps, seed=10 + rank)  # each rank its own data, so its own loss
    lrs, losses = [], []
    for i in range(steps):
        loss = F.mse_loss(model(x[8 * i:8 * i + 8]), y[8 * i:8 * i + 8])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step(loss)
        lrs.append(opt.param_groups[0]["lr"])
        losses.append(loss.item())
    torch.save({"lrs": lrs, "losses": losses, "params": [p.detach() for p in model.parameters()]},
               os.path.join(out_dir, f"{rank}.pt"))
    # Both ranks past their last collective, and DDP's reducer gone, before gloo's sockets close:
    # without this a rank could exit while its peer still tore down (SIGABRT about 1 run in 6).
    dist.barrier()
    del model
    dist.destroy_process_group()


def test_ddp_ranks_set_the_same_lr_from_the_averaged_loss(tmp_path):
    steps = 30
    mp.spawn(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path), steps), nprocs=2)
    r0, r1 = (torch.load(tmp_path / f"{r}.pt") for r in (0, 1))
    assert r0["losses"] != r1["losses"]
    assert r0["lrs"] == r1["lrs"] and len(set(r0["lrs"])) > 20
    for p, q in zip(r0["params"], r1["params"]):
        assert torch.equal(p, q)
    means = [[(a + b) / 2] for a, b in zip(r0["losses"], r1["losses"])]
    assert r0["lrs"] == pytest.approx(_plain_lrs(means, steps)[1:] + [r0["lrs"][-1]], rel=1e-12)


# -- CUDA: read one step late, no host synchronisation ----------------------------------------

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_loss_is_read_one_step_late_without_a_sync():
    losses = [2.0 * 0.9 ** i for i in range(20)]
    cpu = _plain_lrs([[v] for v in losses], total_steps=20)
    p = torch.zeros(1, device="cuda", requires_grad=True)
    opt = torch.optim.SGD([p], lr=0.05)
    sched = MetaLRScheduler.from_pretrained(CKPT, opt, total_steps=20)
    device_losses = [torch.tensor(v, device="cuda") for v in losses]
    torch.cuda.synchronize()
    lrs = []
    torch.cuda.set_sync_debug_mode("error")
    try:
        for loss in device_losses:
            lrs.append(opt.param_groups[0]["lr"])
            opt.step()
            sched.step(loss)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert lrs[:2] == cpu[:2] == [0.05, 0.05]
    assert lrs[2:] == pytest.approx(cpu[1:-1], rel=1e-12)
