"""Adversarial normalisation (Delisle et al., ISBI 2020): the networks, the JSD, sites and site balancing, and the
stock `nnUNetv2_train -tr nnUNetTrainerAdvNorm_smoke` + export/install as a zip + `nnUNetv2_predict` (one fold and a
fold ensemble) + `nnunet-gen evaluate-normalisation`."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from dynamic_network_architectures.architectures.unet import PlainConvUNet
from torch import nn

from nnunet_gen.cli import main as cli_main
from nnunet_gen.convert.phantom import phantom_case
from nnunet_gen.errors import DataError
from nnunet_gen.io.images import Geometry, read_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.sites import SITES_ENV, SITES_FILE, case_sites, site_balanced_probabilities
from nnunet_gen.io.writer import DatasetWriter
from nnunet_gen.preprocess import plan_and_preprocess
from nnunet_gen.training import adv_norm
from synth.advnorm import (ComposedNetwork, NormaliserUNet, SiteDiscriminator, discriminator_loss,
                           generator_segmenter_loss, jensen_shannon_divergence, mean_pairwise_jsd, site_histograms)

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _segmenter() -> PlainConvUNet:
    return PlainConvUNet(1, 3, (4, 8, 16), nn.Conv3d, 3, (1, 2, 2), 1, 2, 1, True, nn.InstanceNorm3d,
                         {"affine": True}, nonlin=nn.LeakyReLU, deep_supervision=True)


def test_composed_network_shapes_gradients_and_deep_supervision_switch():
    torch.manual_seed(0)
    network = ComposedNetwork(NormaliserUNet(1), _segmenter())
    x = torch.randn(2, 1, 12, 16, 20)
    assert network.normaliser(x).shape == x.shape
    outputs = network(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 2, 12, 16, 20), (2, 2, 6, 8, 10)]
    sum(o.square().mean() for o in outputs).backward()
    for part in (network.normaliser, network.segmenter):
        grads = [p.grad for p in part.parameters() if p.grad is not None]
        assert grads and all(torch.isfinite(g).all() for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is not None for p in network.normaliser.parameters())
    network.decoder.deep_supervision = False  # what nnU-Net's set_deep_supervision_enabled does
    assert network(x).shape == (2, 2, 12, 16, 20)
    assert {k.split(".")[0] for k in network.state_dict()} == {"normaliser", "segmenter"}


def test_normaliser_handles_odd_sizes_and_discriminator_has_k_plus_one_classes():
    x = torch.randn(1, 2, 7, 9, 5)
    torch.testing.assert_close(NormaliserUNet(2)(x), x)  # identity before training
    for k in (2, 3, 5):
        d = SiteDiscriminator(k, channels=1)
        assert d(torch.randn(3, 1, 8, 12, 12)).shape == (3, k + 1) and d.fake_class == k
    with pytest.raises(ValueError):
        SiteDiscriminator(1, channels=1)


def test_adversarial_losses_follow_eq_1():
    logits = torch.tensor([[0.0, 0.0, 0.0], [2.0, 0.0, -1.0]])
    labels = torch.tensor([2, 0])
    expected = -(torch.log_softmax(logits, 1)[0, 2] + torch.log_softmax(logits, 1)[1, 0]) / 2
    torch.testing.assert_close(discriminator_loss(logits, labels), expected)
    assert generator_segmenter_loss(torch.tensor(0.7), torch.tensor(0.2), 1.0).item() == pytest.approx(0.5)


def test_jsd_against_hand_computation():
    assert jensen_shannon_divergence([1, 0], [0, 1]) == pytest.approx(1.0)
    assert jensen_shannon_divergence([0.2, 0.3, 0.5], [2, 3, 5]) == pytest.approx(0.0, abs=1e-12)
    # m = [1/4, 1/2, 1/4]: KL(p||m) = 0.5 log2(2) + 0.5 log2(1) = 0.5, KL(q||m) = 0.5 -> JSD = 0.5
    assert jensen_shannon_divergence([0.5, 0.5, 0], [0, 0.5, 0.5]) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        jensen_shannon_divergence([1, 0], [1, 0, 0])


def test_site_histograms_and_mean_pairwise_jsd():
    histograms = site_histograms({"A": [np.zeros(4), np.full(4, 0.9)], "B": [np.full(8, 5.0)]}, 2, (0.0, 1.0))
    np.testing.assert_allclose(histograms["A"], [0.5, 0.5])
    np.testing.assert_allclose(histograms["B"], [0.0, 1.0])  # out of range -> edge bin
    mean, pairs = mean_pairwise_jsd({**histograms, "C": np.array([0.5, 0.5])})
    assert pairs["A vs C"] == pytest.approx(0.0) and pairs["A vs B"] == pytest.approx(pairs["B vs C"])
    assert mean == pytest.approx(2 * pairs["A vs B"] / 3)


def test_site_balanced_sampling_for_unequal_site_sizes():
    sites = {"a1": "A", "a2": "A", "a3": "A", "a4": "A", "b1": "B", "c1": "C", "c2": "C"}
    ids = sorted(sites)
    p = site_balanced_probabilities(ids, sites)
    assert p.sum() == pytest.approx(1.0)
    per_site = {s: sum(pi for i, pi in zip(ids, p) if sites[i] == s) for s in "ABC"}
    assert all(v == pytest.approx(1 / 3) for v in per_site.values())
    draws = np.random.default_rng(0).choice(ids, 30000, p=p)
    counts = {s: sum(sites[d] == s for d in draws) / len(draws) for s in "ABC"}
    assert all(abs(v - 1 / 3) < 0.02 for v in counts.values())


def _write_multisite_dataset(dataset_id: int, per_site: dict[str, int], shape=(16, 24, 24),
                             sites_file: bool = True) -> tuple[str, dict[str, str]]:
    geometry = Geometry.isotropic(1.0)
    sites = {f"site{s}_{i:03d}": s for s, n in per_site.items() for i in range(n)}
    with DatasetWriter(dataset_id, "AdvNorm", {0: "MR"}, {"background": 0, "tumour": 1}, {"test": 1}) as w:
        for k, (case, site) in enumerate(sites.items()):
            image, label = phantom_case(k, site, shape)
            w.write_case(case, image[None], label, geometry)
        folder = w.finalize(Manifest.for_real_cases(sites))
    if sites_file:
        (folder / SITES_FILE).write_text(json.dumps(sites))
    return folder.name, sites


def test_sites_sources_and_bad_input(nnunet_dirs, monkeypatch, tmp_path):
    name, sites = _write_multisite_dataset(621, {"A": 2, "B": 1}, shape=(8, 12, 12))
    assert case_sites(name, sorted(sites)) == sites
    with pytest.raises(DataError) as error:
        case_sites(name, sorted(sites) + ["unknown_001"])
    assert "unknown_001" in str(error.value) and "\n" not in str(error.value)
    with pytest.raises(DataError, match="one site") as error:
        case_sites(name, ["siteA_000", "siteA_001"])
    assert "\n" not in str(error.value)
    override = tmp_path / "sites.json"
    override.write_text(json.dumps({c: "X" if c.startswith("siteA") else "Y" for c in sites}))
    monkeypatch.setenv(SITES_ENV, str(override))
    assert set(case_sites(name, sorted(sites)).values()) == {"X", "Y"}
    monkeypatch.setenv(SITES_ENV, str(tmp_path / "missing.json"))
    with pytest.raises(DataError, match="not found"):
        case_sites(name, sorted(sites))


def test_trainer_variants():
    assert adv_norm.__all__ == [f"{base}{suffix}" for base in ("nnUNetTrainerAdvNorm", "nnUNetTrainerAdvNormScaledLR")
                                for suffix in ("", "_smoke", "_demo", "_5epochs")]
    scaled, paper = adv_norm.nnUNetTrainerAdvNormScaledLR_demo, adv_norm.nnUNetTrainerAdvNorm
    # the paper's G:S:D = 1e-5 : 1e-4 : 1e-4 kept at nnU-Net's S rate 1e-2
    assert (scaled.generator_lr, scaled.discriminator_lr) == pytest.approx((paper.generator_lr * 100,
                                                                            paper.discriminator_lr * 100))
    assert all("__" not in n and issubclass(getattr(adv_norm, n), adv_norm.nnUNetTrainerAdvNorm)
               for n in adv_norm.__all__)


def test_stock_nnunet_trains_predicts_and_evaluates_normalisation(tmp_path, nnunet_dirs, monkeypatch):
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    name, _ = _write_multisite_dataset(622, {"A": 2, "B": 2, "C": 2})
    plan_and_preprocess(622, num_processes=1)
    env = {**os.environ, "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0",
           "nnUNet_extTrainer": str(REPO / "trainers"), "OMP_NUM_THREADS": "1"}
    trainer = "nnUNetTrainerAdvNorm_smoke"
    result = subprocess.run([BIN / "nnUNetv2_train", "622", "3d_fullres", "0", "-tr", trainer, "-device", "cpu"],
                            env=env, capture_output=True, text=True, timeout=400)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    fold = nnunet_dirs["nnUNet_results"] / name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file() and (fold / "checkpoint_final_adversary.pth").is_file()
    assert not (fold / "checkpoint_latest_adversary.pth").exists()
    log = "".join(p.read_text() for p in fold.glob("training_log_*.txt"))
    assert "discriminator classes 4" in log and "G warm-up 1 iterations" in log
    assert "discriminator_real" in log and "reconstruction" in log

    # the composed network travels as a stock model zip: export, install elsewhere, predict from the installed copy
    archive = tmp_path / "model.zip"
    result = subprocess.run([BIN / "nnUNetv2_export_model_to_zip", "-d", "622", "-o", archive, "-c", "3d_fullres",
                             "-tr", trainer, "-f", "0"], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    installed = {**env, "nnUNet_results": str(tmp_path / "installed_results")}
    result = subprocess.run([BIN / "nnUNetv2_install_pretrained_model_from_zip", archive], env=installed,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    predictions = tmp_path / "predictions"
    result = subprocess.run([BIN / "nnUNetv2_predict", "-i", nnunet_dirs["nnUNet_raw"] / name / "imagesTr",
                             "-o", predictions, "-d", "622", "-c", "3d_fullres", "-f", "0", "-tr", trainer,
                             "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
                            env=installed, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert len(list(predictions.glob("*.nii.gz"))) == 6
    # fold ensembling averages composed networks: a copy of fold 0 as fold 1 must give the same segmentation
    installed_model = Path(installed["nnUNet_results"]) / name / f"{trainer}__nnUNetPlans__3d_fullres"
    shutil.copytree(installed_model / "fold_0", installed_model / "fold_1")
    ensembled = tmp_path / "ensembled"
    result = subprocess.run([BIN / "nnUNetv2_predict", "-i", nnunet_dirs["nnUNet_raw"] / name / "imagesTr",
                             "-o", ensembled, "-d", "622", "-c", "3d_fullres", "-f", "0", "1", "-tr", trainer,
                             "-device", "cpu", "--disable_tta", "-npp", "1", "-nps", "1"],
                            env=installed, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    for single in sorted(predictions.glob("*.nii.gz")):
        np.testing.assert_array_equal(read_image(ensembled / single.name)[0], read_image(single)[0])

    monkeypatch.setenv("nnUNet_extTrainer", str(REPO / "trainers"))
    out = tmp_path / "normalisation"
    assert cli_main(["evaluate-normalisation", "-d", "622", "-tr", trainer, "-f", "0", "-o", str(out),
                     "--subset", "all", "--bins", "50", "-device", "cpu"]) == 0
    report = json.loads((out / "normalisation.json").read_text())
    assert report["cases_per_site"] == {"A": 2, "B": 2, "C": 2}
    for key in ("before", "after"):
        assert 0 <= report[key]["mean_pairwise_jsd"] <= 1 and len(report[key]["pairwise_jsd"]) == 3
    assert all((out / f).stat().st_size > 0 for f in ("normalisation.md", "histograms.png", "montage.png"))
