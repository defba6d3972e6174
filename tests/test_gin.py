"""GIN (Ouyang et al., IEEE TMI 2022): the model, its batchgeneratorsv2 transform, its place in nnU-Net's pipeline,
and the stock `nnUNetv2_train -tr nnUNetTrainerGIN_smoke`."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from batchgeneratorsv2.transforms.spatial.spatial import SpatialTransform
from batchgeneratorsv2.transforms.utils.pseudo2d import Convert2DTo3DTransform
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

from nnunet_gen.augment.gin import GINTransform
from nnunet_gen.augment.transforms import insert_after_spatial
from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.preprocess import plan_and_preprocess
from nnunet_gen.training import gin as gin_trainers
from synth.gin import GlobalIntensityNonlinear, RandomGlobalIntensityNonlinear

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _image(shape: tuple[int, ...], seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float32))


@pytest.mark.parametrize("shape", [(1, 10, 12, 14), (2, 8, 12, 12), (1, 20, 24)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_output_shape_dtype_finite_and_frobenius_norm(shape, dtype):
    image = _image(shape).to(dtype)
    for seed in range(5):
        gin = GlobalIntensityNonlinear((3, 1, 3, 3), alpha=0.7, seed=seed)
        out = gin(image)
        assert out.shape == image.shape and out.dtype == dtype and torch.isfinite(out).all()
        torch.testing.assert_close(torch.linalg.vector_norm(out), torch.linalg.vector_norm(image), rtol=1e-5, atol=0)
        assert not torch.allclose(out, image, atol=1e-2)


def test_same_seed_same_output_and_different_seed_different_output():
    image = _image((1, 8, 16, 16))
    first = GlobalIntensityNonlinear((3, 3, 1, 3), alpha=0.5, seed=11)(image)
    assert torch.equal(first, GlobalIntensityNonlinear((3, 3, 1, 3), alpha=0.5, seed=11)(image))
    assert not torch.allclose(first, GlobalIntensityNonlinear((3, 3, 1, 3), alpha=0.5, seed=12)(image))


def test_alpha_zero_returns_the_input():
    image = _image((2, 6, 10, 10))
    torch.testing.assert_close(GlobalIntensityNonlinear((3, 3), alpha=0.0, seed=0)(image), image)


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_layers_follow_the_configured_kernels_and_channels(spatial_dims):
    gin = GlobalIntensityNonlinear((1, 3, 5), alpha=0.5, seed=0, interm_channels=4)
    layers = gin.layers(channels=2, spatial_dims=spatial_dims)
    assert gin.n_layers == len(layers) == 3
    assert [tuple(w.shape) for w, _ in layers] == [(4, 2) + (1,) * spatial_dims, (4, 4) + (3,) * spatial_dims,
                                                   (2, 4) + (5,) * spatial_dims]
    assert [tuple(b.shape) for _, b in layers] == [(4,), (4,), (2,)]


def test_sampling_uses_the_pool_and_numpy_global_rng():
    random_gin = RandomGlobalIntensityNonlinear(n_layers=6, kernel_pool=(3, 5), interm_channels=3)
    np.random.seed(4)
    draws = [random_gin.sample() for _ in range(20)]
    np.random.seed(4)
    assert draws == [random_gin.sample() for _ in range(20)]
    assert all(len(d.kernel_sizes) == 6 and d.interm_channels == 3 and 0 <= d.alpha <= 1 for d in draws)
    assert {k for d in draws for k in d.kernel_sizes} == {3, 5}
    assert len({d.seed for d in draws}) == 20
    defaults = RandomGlobalIntensityNonlinear().sample(np.random.RandomState(0))
    assert len(defaults.kernel_sizes) == 4 and set(defaults.kernel_sizes) <= {1, 3} and defaults.interm_channels == 2


@pytest.mark.parametrize("bad", [lambda: GlobalIntensityNonlinear((2,), 0.5, 0),
                                 lambda: GlobalIntensityNonlinear((), 0.5, 0),
                                 lambda: GlobalIntensityNonlinear((3,), 1.5, 0),
                                 lambda: RandomGlobalIntensityNonlinear(n_layers=0),
                                 lambda: GINTransform(p=1.2)])
def test_bad_parameters_are_refused(bad):
    with pytest.raises(ValueError):
        bad()


def test_transform_changes_the_image_only_and_is_reproducible():
    image, seg = _image((1, 8, 16, 16)), torch.randint(-1, 3, (1, 8, 16, 16), dtype=torch.int16)
    transform = GINTransform(p=1.0)
    outputs = []
    for _ in range(2):
        np.random.seed(7)
        outputs.append(transform(image=image.clone(), segmentation=seg.clone()))
    assert torch.equal(outputs[0]["image"], outputs[1]["image"]) and not torch.allclose(outputs[0]["image"], image)
    assert all(torch.equal(out["segmentation"], seg) for out in outputs)


def test_probability_zero_leaves_the_image_bit_identical():
    image, seg = _image((2, 8, 16, 16)), torch.zeros((1, 8, 16, 16), dtype=torch.int16)
    out = GINTransform(p=0.0)(image=image.clone(), segmentation=seg.clone())
    assert torch.equal(out["image"], image) and torch.equal(out["segmentation"], seg)


@pytest.mark.parametrize("dummy_2d", [False, True])
def test_gin_follows_the_spatial_block_and_nnunet_pipeline_runs(dummy_2d):
    patch_size = (8, 32, 32) if dummy_2d else (16, 16, 16)
    transforms = nnUNetTrainer.get_training_transforms(patch_size, (-0.2, 0.2), None, (0, 1, 2), dummy_2d)
    transforms = insert_after_spatial(transforms, GINTransform(p=1.0))
    kinds = [type(t) for t in transforms.transforms]
    index = kinds.index(GINTransform)
    assert kinds[index - 1] is (Convert2DTo3DTransform if dummy_2d else SpatialTransform)
    np.random.seed(0)
    out = transforms(image=_image((1, *patch_size)), segmentation=torch.zeros((1, *patch_size), dtype=torch.int16))
    assert out["image"].shape == (1, *patch_size) and torch.isfinite(out["image"]).all()


def test_trainer_variants():
    assert all(issubclass(getattr(gin_trainers, name), gin_trainers.nnUNetTrainerGIN) for name in gin_trainers.__all__)
    assert len(gin_trainers.__all__) == 7 and gin_trainers.nnUNetTrainerGIN.gin_probability == 0.5


def test_stock_nnunet_trains_with_gin(tmp_path, nnunet_dirs, monkeypatch):
    monkeypatch.setenv("nnUNet_def_n_proc", "1")
    write_phantom_dataset(611, "Gin", cases_a=5, cases_b=0, shape=(16, 24, 24))
    plan_and_preprocess(611, num_processes=1)
    env = {**os.environ, "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0",
           "nnUNet_extTrainer": str(REPO / "trainers"), "OMP_NUM_THREADS": "1"}
    result = subprocess.run([BIN / "nnUNetv2_train", "611", "3d_fullres", "0", "-tr", "nnUNetTrainerGIN_smoke",
                             "-device", "cpu"], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    trained = nnunet_dirs["nnUNet_results"] / "Dataset611_Gin" / "nnUNetTrainerGIN_smoke__nnUNetPlans__3d_fullres"
    fold = trained / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file()
    assert any("GIN augmentation after the spatial transform" in p.read_text()
               for p in fold.glob("training_log_*.txt"))
