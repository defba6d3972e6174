"""``nnUNetTrainerAdvNorm``: adversarial normalisation (Delisle et al., ISBI 2020; :mod:`synth.advnorm`) in nnU-Net.

The network nnU-Net builds, trains, checkpoints and predicts with is ``ComposedNetwork(G, S)`` = S(G(x)), S being
nnU-Net's own planned network, so ``nnUNetv2_predict``, ensembling and ``nnUNetv2_export_model_to_zip`` work
unchanged (with ``nnUNet_extTrainer`` set). The site discriminator D lives in the trainer only; its weights and the
G/D optimisers go to a side file ``<checkpoint>_adversary.pth`` so ``nnUNetv2_train --c`` resumes the whole game.

Per iteration, after G's warm-up: (1) G and S take one step on ``L_seg(S(G(x))) - lambda * CE(D(G(x)), K)``,
(2) D takes one step on ``lambda * [CE(D(x), site) + CE(D(G(x)), K)]`` (the paper's two alternating steps). During
the warm-up only G trains, on MSE(G(x), x) (the paper's pre-training; S and D start with the adversarial phase).
Sites per case come from :mod:`nnunet_gen.io.sites`; training cases are drawn so that every site has the same
total probability (each batch is then site-balanced in expectation).

Follows the paper: the three networks and Eq. (1) with lambda = 1; K + 1 discriminator classes; G pre-trained with
MSE for 3 epochs; SGD with momentum 0.9 and weight decay 0.1, lr 1e-5 (G) and 1e-4 (D); Kaiming initialisation.
Deviations:
* S is nnU-Net's network with its patch size, optimiser (SGD lr 1e-2, Nesterov, weight decay 3e-5), poly lr decay,
  loss (Dice + CE, deep supervision) and augmentation, not the paper's 32^3 patches (stride 8^3), lr 1e-4, weighted
  Dice loss and no augmentation; D sees nnU-Net's augmented patches.
* All three learning rates follow nnU-Net's poly decay, not the paper's reduce-on-plateau (patience 3, factor 10).
* The warm-up is 3 nnU-Net epochs (750 iterations), capped at half the training so short schedules reach the
  adversarial phase; after it the paper's MSE term is dropped (Eq. (1) has none). S trains on S(G(x)) during the
  warm-up too (G detached: its only gradient is the MSE), so S gets the same iteration budget as a stock
  nnUNetTrainer; the paper starts S at the fourth epoch.
* Single-device training only (D is not wrapped for DDP).
"""
from __future__ import annotations

import os

import numpy as np
import torch
from nnunetv2.training.lr_scheduler.polylr import PolyLRScheduler
from nnunetv2.utilities.helpers import dummy_context
from torch import autocast, nn
from torch._dynamo import OptimizedModule

from nnunet_gen.io.sites import case_sites, site_balanced_probabilities
from nnunet_gen.training.schedules import add_schedule_variants
from nnunet_gen.training.synthetic_data import nnUNetTrainerSyntheticData
from synth.advnorm import (ComposedNetwork, NormaliserUNet, SiteDiscriminator, discriminator_loss,
                           generator_segmenter_loss, reconstruction_loss)

#: train_step's per-iteration losses besides nnU-Net's ``loss`` (= the segmentation loss); NaN where not computed.
EXTRA_LOSSES = ("reconstruction", "generator_fake", "discriminator_real", "discriminator_fake")


def adversary_file(checkpoint: str) -> str:
    """Side file holding D and the G/D optimisers next to an nnU-Net checkpoint."""
    return checkpoint[:-4] + "_adversary.pth" if checkpoint.endswith(".pth") else checkpoint + "_adversary"


class nnUNetTrainerAdvNorm(nnUNetTrainerSyntheticData):
    """nnUNetTrainer training S(G(x)) against a site discriminator (module docstring).

    Class attributes (override in a subclass to configure):
        adversarial_weight: lambda of Eq. (1) (paper: 1.0).
        generator_lr, discriminator_lr, adversary_momentum, adversary_weight_decay: SGD of G and D (paper).
        warmup_epochs: G's MSE pre-training, in nnU-Net epochs (paper: 3), capped at half the training.
        normaliser_features, discriminator_features: channels per level of G and D.
    """

    adversarial_weight: float = 1.0
    generator_lr: float = 1e-5
    discriminator_lr: float = 1e-4
    adversary_momentum: float = 0.9
    adversary_weight_decay: float = 0.1
    warmup_epochs: int = 3
    normaliser_features: tuple[int, ...] = (8, 16, 32)
    discriminator_features: tuple[int, ...] = (16, 32, 64)

    @classmethod
    def build_network_architecture(cls, plans_manager, configuration_manager, num_input_channels: int,
                                   num_output_channels: int, enable_deep_supervision: bool = True) -> nn.Module:
        segmenter = nnUNetTrainerSyntheticData.build_network_architecture(
            plans_manager, configuration_manager, num_input_channels, num_output_channels, enable_deep_supervision)
        return ComposedNetwork(NormaliserUNet(num_input_channels, cls.normaliser_features), segmenter)

    def composed(self) -> ComposedNetwork:
        """The (uncompiled) composed network."""
        network = self.network
        return network._orig_mod if isinstance(network, OptimizedModule) else network

    def initialize(self):
        if self.was_initialized:
            return
        if self.is_ddp:
            raise RuntimeError(f"{self.__class__.__name__} trains on one device only (no -num_gpus > 1)")
        training_cases, _ = self.do_split()
        self.case_sites = case_sites(self.plans_manager.dataset_name, sorted(training_cases))
        self.sites = sorted(set(self.case_sites.values()))
        super().initialize()
        self.discriminator = SiteDiscriminator(len(self.sites), self.num_input_channels,
                                               self.discriminator_features).to(self.device)
        self.optimizer_d = torch.optim.SGD(self.discriminator.parameters(), self.discriminator_lr,
                                           momentum=self.adversary_momentum, weight_decay=self.adversary_weight_decay)
        self.lr_scheduler_d = PolyLRScheduler(self.optimizer_d, self.discriminator_lr, self.num_epochs)

    def configure_optimizers(self):
        """nnU-Net's optimiser and schedule for S; the paper's SGD for G (the same poly decay)."""
        composed = self.composed()
        optimizer = torch.optim.SGD(composed.segmenter.parameters(), self.initial_lr, weight_decay=self.weight_decay,
                                    momentum=0.99, nesterov=True)
        self.optimizer_g = torch.optim.SGD(composed.normaliser.parameters(), self.generator_lr,
                                           momentum=self.adversary_momentum, weight_decay=self.adversary_weight_decay)
        self.lr_scheduler_g = PolyLRScheduler(self.optimizer_g, self.generator_lr, self.num_epochs)
        return optimizer, PolyLRScheduler(optimizer, self.initial_lr, self.num_epochs)

    def sampling_probabilities(self, identifiers: list[str]) -> np.ndarray:
        """Every site gets the same total sampling probability (the paper's site-balanced batches)."""
        return site_balanced_probabilities(identifiers, self.case_sites)

    def on_train_start(self):
        super().on_train_start()
        total = self.num_epochs * self.num_iterations_per_epoch
        self.warmup_iterations = min(self.warmup_epochs * self.num_iterations_per_epoch, total // 2)
        self.iteration = self.current_epoch * self.num_iterations_per_epoch
        counts = {s: list(self.case_sites.values()).count(s) for s in self.sites}
        self.print_to_log_file(
            f"adversarial normalisation: {len(self.sites)} sites {counts} (training cases, site-balanced sampling), "
            f"discriminator classes {len(self.sites) + 1}, lambda {self.adversarial_weight}, G warm-up "
            f"{self.warmup_iterations} iterations, lr G {self.generator_lr} D {self.discriminator_lr}")

    def on_train_epoch_start(self):
        super().on_train_epoch_start()
        self.lr_scheduler_g.step(self.current_epoch)
        self.lr_scheduler_d.step(self.current_epoch)

    def _autocast(self):
        return autocast(self.device.type, enabled=True) if self.device.type == "cuda" else dummy_context()

    def _step(self, loss: torch.Tensor, optimizers: tuple[torch.optim.Optimizer, ...]) -> None:
        """Backward ``loss`` and step ``optimizers`` with nnU-Net's gradient clipping (and AMP scaling on CUDA)."""
        params = [p for o in optimizers for g in o.param_groups for p in g["params"]]
        if self.grad_scaler is not None:
            self.grad_scaler.scale(loss).backward()
            for o in optimizers:
                self.grad_scaler.unscale_(o)
            torch.nn.utils.clip_grad_norm_(params, 12)
            for o in optimizers:
                self.grad_scaler.step(o)
        else:
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 12)
            for o in optimizers:
                o.step()

    def train_step(self, batch: dict) -> dict:
        data = batch["data"].to(self.device, non_blocking=True)
        target = batch["target"]
        target = [t.to(self.device, non_blocking=True) for t in target] if isinstance(target, list) \
            else target.to(self.device, non_blocking=True)
        sites = torch.tensor([self.sites.index(self.case_sites[k]) for k in batch["keys"]], device=self.device)
        fake = torch.full_like(sites, len(self.sites))
        network = self.composed()
        warmup = self.iteration < self.warmup_iterations
        self.iteration += 1
        losses = dict.fromkeys(EXTRA_LOSSES, np.nan)
        for o in (self.optimizer, self.optimizer_g, self.optimizer_d):
            o.zero_grad(set_to_none=True)

        with self._autocast():
            normalised = network.normaliser(data)
            if warmup:
                reconstruction = reconstruction_loss(normalised, data)
                segmentation = self.loss(network.segmenter(normalised.detach()), target)
                loss = reconstruction + segmentation
                losses["reconstruction"] = reconstruction.item()
            else:
                segmentation = self.loss(network.segmenter(normalised), target)
                generator_fake = discriminator_loss(self.discriminator(normalised), fake)
                loss = generator_segmenter_loss(segmentation, generator_fake, self.adversarial_weight)
                losses["generator_fake"] = generator_fake.item()
        self._step(loss, (self.optimizer_g, self.optimizer))

        if not warmup:
            self.optimizer_d.zero_grad(set_to_none=True)
            with self._autocast():
                real = discriminator_loss(self.discriminator(data), sites)
                generated = discriminator_loss(self.discriminator(normalised.detach()), fake)
            self._step(self.adversarial_weight * (real + generated), (self.optimizer_d,))
            losses.update(discriminator_real=real.item(), discriminator_fake=generated.item())
        if self.grad_scaler is not None:
            self.grad_scaler.update()
        return {"loss": segmentation.detach().cpu().numpy(), **losses}

    def on_train_epoch_end(self, train_outputs: list[dict]):
        means = {k: np.array([o[k] for o in train_outputs], dtype=float) for k in EXTRA_LOSSES}
        self.print_to_log_file("adversarial normalisation losses: " + ", ".join(
            f"{k} {np.nanmean(v):.4f}" for k, v in means.items() if np.isfinite(v).any()))
        super().on_train_epoch_end(train_outputs)

    def save_checkpoint(self, filename: str) -> None:
        super().save_checkpoint(filename)
        if self.local_rank == 0 and not self.disable_checkpointing:
            torch.save({"discriminator": self.discriminator.state_dict(), "sites": self.sites,
                        "optimizer_g": self.optimizer_g.state_dict(), "optimizer_d": self.optimizer_d.state_dict()},
                       adversary_file(filename))

    def load_checkpoint(self, filename_or_checkpoint) -> None:
        super().load_checkpoint(filename_or_checkpoint)
        if isinstance(filename_or_checkpoint, str) and os.path.isfile(adversary_file(filename_or_checkpoint)):
            state = torch.load(adversary_file(filename_or_checkpoint), map_location=self.device, weights_only=True)
            if state["sites"] != self.sites:
                raise RuntimeError(f"checkpoint sites {state['sites']} differ from this dataset's {self.sites}")
            self.discriminator.load_state_dict(state["discriminator"])
            self.optimizer_g.load_state_dict(state["optimizer_g"])
            self.optimizer_d.load_state_dict(state["optimizer_d"])

    def on_train_end(self):
        super().on_train_end()
        latest = adversary_file(os.path.join(self.output_folder, "checkpoint_latest.pth"))
        if self.local_rank == 0 and os.path.isfile(latest):
            os.remove(latest)


class nnUNetTrainerAdvNormScaledLR(nnUNetTrainerAdvNorm):
    """The paper's learning-rate ratios at nnU-Net's segmenter rate: the paper trains S at 1e-4, G at 1e-5 and D at
    1e-4; nnU-Net trains S at 1e-2, so G gets 1e-3 and D 1e-2 (both x100). With the paper's absolute rates G barely
    leaves the identity in a short nnU-Net schedule (README, multi-site benchmark)."""

    generator_lr = 1e-3
    discriminator_lr = 1e-2


__all__ = add_schedule_variants(globals(), nnUNetTrainerAdvNorm, nnUNetTrainerAdvNormScaledLR,
                                suffixes=("smoke", "demo", "5epochs"))
