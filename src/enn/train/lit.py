"""The LightningModule that wraps a plain ``enn`` model: losses, metrics, optimiser, schedule.

The model itself never imports Lightning. Language models carry their recurrent state across
consecutive batches (truncated BPTT) and reset it at the start of every epoch and split.
"""

from __future__ import annotations

import math
import random

import lightning.pytorch as pl
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..models import TrainConfig, detach_state


@torch.no_grad()
def clip_per_variable(parameters, max_norm: float) -> None:
    """Scale each gradient ``g`` by ``min(1, max_norm / ||g||)``, every tensor on its own."""
    for p in parameters:
        if p.grad is not None:
            norm = torch.linalg.vector_norm(p.grad)
            p.grad.mul_((max_norm / norm.clamp_min(max_norm)).to(p.grad.dtype))


class StepDecay:
    """The step schedule's factor at 0-based epoch ``e``: ``lr_factor ** max(0, e + 1 -
    decay_after)`` (full rate for ``decay_after`` epochs, then x ``lr_factor`` per epoch), kept
    at or above ``min_lr / lr``. An object, not a lambda: ``LambdaLR`` saves its state."""

    def __init__(self, cfg: TrainConfig) -> None:
        self.factor, self.after, self.floor = cfg.lr_factor, cfg.decay_after, cfg.min_lr / cfg.lr

    def __call__(self, epoch: int) -> float:
        return max(self.factor ** max(0, epoch + 1 - self.after), self.floor)


def plateau_schedule(opt: torch.optim.Optimizer, cfg: TrainConfig):
    """ReduceLROnPlateau with Keras' rule, the reference's: the rate is multiplied by
    ``lr_factor`` once ``lr_patience`` epochs in a row bring the validation loss no lower than
    the best by 1e-4. Torch's own count lowers it one epoch later, so that with
    ``lr_patience`` 2 beside early stopping's patience 3 a run stopped before its rate was
    ever lowered."""
    return torch.optim.lr_scheduler.ReduceLROnPlateau(
        opt, mode="min", factor=cfg.lr_factor, patience=max(cfg.lr_patience - 1, 0),
        threshold=1e-4, threshold_mode="abs", min_lr=cfg.min_lr,
    )


class LitSequenceModel(pl.LightningModule):
    def __init__(
        self, model: nn.Module, kind: str, train_cfg: TrainConfig, config_dict: dict | None = None
    ) -> None:
        super().__init__()
        self.model = model
        self.kind = kind
        self.train_cfg = train_cfg
        self.config_dict = config_dict or {}
        self._state: dict[str, object] = {}  # LM: carried state per split
        # LM: [sum of token NLL (a float64 tensor on the model's device: no wait for the
        # device at each step), tokens] per split
        self._nll: dict[str, list] = {}

    # --- steps -----------------------------------------------------------------------------
    def _step(self, batch, split: str) -> torch.Tensor:
        if self.kind == "language_model":
            return self._lm_step(batch, split)
        x, y = batch[0], batch[1]
        lengths = batch[2] if len(batch) > 2 else None
        logits = self.model(x, lengths)  # (B, C), or (B, T, C) with a target per step
        # float32 at least: a bf16-true model's logits would round the loss and its sums
        logits = logits.to(torch.promote_types(logits.dtype, torch.float32))
        loss = F.cross_entropy(logits.flatten(0, -2), y.flatten())
        hits = logits.argmax(-1) == y
        if logits.dim() == 3:  # steps without a target are -100, which both measures skip
            asked = y != -100
            acc, n = hits[asked].float().mean(), int(asked.sum())
        else:  # one target per sequence: no count to read back from the device
            acc, n = hits.float().mean(), y.size(0)
        self.log(
            f"{split}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
            prog_bar=True,
        )
        self.log(
            f"{split}_acc",
            acc,
            on_step=False,
            on_epoch=True,
            batch_size=n,
            sync_dist=True,
            prog_bar=True,
        )
        aux = self.model.aux_loss
        return loss if aux is None or split != "train" else loss + aux

    def _lm_step(self, batch, split: str) -> torch.Tensor:
        x, y = batch  # (B, T) each
        hidden, state = self.model(x, self._state.get(split))
        self._state[split] = detach_state(state)
        nll = self.model.nll(hidden, y)  # (B, T)
        loss = nll.mean()
        sums = self._nll.setdefault(split, [nll.new_zeros((), dtype=torch.float64), 0])
        sums[0] += nll.detach().sum().to(torch.float64)
        sums[1] += y.numel()
        self.log(
            f"{split}_loss",
            loss,
            on_step=False,
            on_epoch=True,
            batch_size=y.numel(),
            sync_dist=True,
            prog_bar=True,
        )
        if split != "train":
            return loss
        if self.train_cfg.lm_loss == "sum_steps":
            loss = nll.sum(1).mean()  # the logged loss stays the mean token NLL
        aux = self.model.aux_loss
        return loss if aux is None else loss + aux

    def _reset(self, split: str) -> None:
        self._state.pop(split, None)
        self._nll.pop(split, None)

    def _log_perplexity(self, split: str) -> None:
        if self.kind == "language_model" and split in self._nll:
            total, tokens = self._nll[split]
            total = float(total)
            if self.trainer.world_size > 1:  # every process's own rows
                sums = torch.tensor([total, tokens], dtype=torch.float64, device=self.device)
                total, tokens = self.trainer.strategy.reduce(sums, reduce_op="sum").tolist()
            self.log(f"{split}_ppl", math.exp(min(total / max(tokens, 1), 50.0)))

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def on_train_epoch_start(self):
        self._reset("train")

    def on_validation_epoch_start(self):
        self._reset("val")

    def on_test_epoch_start(self):
        self._reset("test")

    def on_validation_epoch_end(self):
        self._log_perplexity("val")
        # The epoch's training tokens are all counted by now: logged here, train_ppl reaches
        # the epoch log (a callback, whose on_train_epoch_end runs before this module's).
        self._log_perplexity("train")

    def on_test_epoch_end(self):
        self._log_perplexity("test")

    def on_train_epoch_end(self):
        # The plateau schedule steps here, between the epoch's validation and the end-of-epoch
        # checkpoint (which runs after this hook), so that the checkpoint holds its state after
        # this epoch's step; Lightning would step it only after the checkpoint was written.
        if self.train_cfg.schedule == "step":
            self.lr_schedulers().step()
            return
        val_loss = self.trainer.callback_metrics.get("val_loss")
        if val_loss is not None:
            self.lr_schedulers().step(float(val_loss))

    def lr_scheduler_step(self, scheduler, metric) -> None:
        """Stepped in ``on_train_epoch_end`` instead."""

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """``train.clip=global`` clips the norm of all gradients together (Lightning's
        ``gradient_clip_val``); ``per_variable`` clips each parameter's gradient on its own,
        Keras' ``clipnorm`` rule: ``g * c / max(||g||, c)``."""
        if self.train_cfg.clip == "per_variable" and gradient_clip_val:
            clip_per_variable(self.model.parameters(), gradient_clip_val)
        elif gradient_clip_val and getattr(self.trainer.precision_plugin, "scaler", None) is None:
            # Lightning's own clip, less its AMP plugin's refusal of a fused optimizer, which
            # only a grad scaler (16-mixed) calls for: bf16-mixed has none
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), gradient_clip_val)
        else:
            super().configure_gradient_clipping(
                optimizer, gradient_clip_val, gradient_clip_algorithm
            )

    # --- optimisation ------------------------------------------------------------------------
    def configure_optimizers(self):
        cfg = self.train_cfg
        params = self.model.parameters()
        if cfg.optimizer == "sgd":
            opt = torch.optim.SGD(params, lr=cfg.lr)
        else:
            # fused=None, not False: False would also turn off the default multi-tensor path
            opt = torch.optim.Adam(params, lr=cfg.lr, eps=cfg.adam_eps,
                                   fused=True if cfg.adam_fused else None)
        if cfg.schedule == "step":
            sched = torch.optim.lr_scheduler.LambdaLR(opt, StepDecay(cfg))
        else:
            sched = plateau_schedule(opt, cfg)
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": sched, "monitor": "val_loss", "interval": "epoch"},
        }

    # --- checkpoints: the config and every RNG, so that a resumed run ends like an unbroken one
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["enn_config"] = self.config_dict
        checkpoint["enn_kind"] = self.kind
        name, keys, pos, has_gauss, gauss = np.random.get_state()
        # plain types and tensors only, so that weights-only loading accepts the file
        checkpoint["enn_rng"] = {
            "torch": torch.get_rng_state(),
            "numpy": [name, torch.from_numpy(keys.astype(np.int64)), pos, has_gauss, gauss],
            "python": random.getstate(),
        }
        if torch.cuda.is_initialized():  # trace noise and dropout on CUDA draw from it
            # the generator of this process's device: under DDP every rank's advances in step
            # with rank 0's, which alone writes the file
            checkpoint["enn_rng"]["cuda"] = torch.cuda.get_rng_state()

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        rng = checkpoint.get("enn_rng")
        if rng:
            torch.set_rng_state(rng["torch"])
            name, keys, pos, has_gauss, gauss = rng["numpy"]
            np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
            random.setstate(rng["python"])
            if "cuda" in rng and torch.cuda.is_available():  # absent from CPU runs' files
                torch.cuda.set_rng_state(rng["cuda"])
