"""The CUDA path: SinGAN, ARHNet, CycleGAN/CUT and StyleGAN2 trained on the GPU, and stock nnU-Net self-training
with ``-device cuda``.

CI has no GPU, so this module is skipped there (one line in the ``-ra`` summary); on a GPU machine run
``pytest tests/test_cuda.py``. Where CPU and GPU must agree (the same weights run on either device), they are
compared; GPU training itself is checked for finite losses and for the same learning behaviour as on the CPU.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_arhnet import make_phantom, small_config
from test_singan import TINY, textured_image

from nnunet_gen.cli import main
from nnunet_gen.convert.phantom import write_phantom_dataset
from synth.arhnet import harmonize_volume, load_harmonizer, save_harmonizer, train_harmonizer
from synth.singan import SinGAN, train_singan

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_singan_trains_on_cuda_and_its_checkpoint_runs_alike_on_cpu(tmp_path) -> None:
    image = textured_image()
    model = train_singan(image, TINY, seed=0, device="cuda", progress=False)
    assert model.device.type == "cuda" and all(np.isfinite(model.reconstruction_rmse))
    errors = [float(np.sqrt(np.mean((model.reconstruct(s) - image) ** 2))) for s in range(model.num_scales)]
    assert errors[-1] < errors[0]
    path = model.save(tmp_path / "singan.safetensors")
    on_cpu, on_gpu = SinGAN.load(path, device="cpu"), SinGAN.load(path, device="cuda")
    tolerance = 1e-3 * float(np.ptp(image))
    np.testing.assert_allclose(on_gpu.reconstruct(), on_cpu.reconstruct(), atol=tolerance)
    np.testing.assert_allclose(on_gpu.harmonize(image * 0.7, 1, seed=3), on_cpu.harmonize(image * 0.7, 1, seed=3),
                               atol=tolerance)
    np.testing.assert_allclose(on_gpu.sample(2, seed=5), on_cpu.sample(2, seed=5), atol=tolerance)


@pytest.mark.parametrize("method", ["cyclegan", "cut"])
def test_translation_trains_on_cuda_and_translates_alike_on_cpu(tmp_path, method) -> None:
    from dataclasses import replace

    from synth.translation import PRESETS, Translator, train_translator
    rng = np.random.default_rng(0)
    source = rng.uniform(1, 100, (6, 32, 32)).astype(np.float32)
    config = replace(PRESETS["cpu"], method=method, iterations=3, crop_size=32)
    model = train_translator(source, 120 - source, config, seed=0, device="cuda", progress=False)
    assert all(np.isfinite(v).all() for v in model.history.values())
    path = model.save(tmp_path / "t.safetensors")
    on_cpu, on_gpu = Translator.load(path, "cpu"), Translator.load(path, "cuda")
    np.testing.assert_allclose(on_gpu.translate_volume(source), on_cpu.translate_volume(source), atol=0.5)


def test_stylegan2_trains_on_cuda_and_generates_alike_on_cpu(tmp_path) -> None:
    from dataclasses import replace

    from synth.stylegan2 import PRESETS, StyleGAN2Model, train_stylegan2
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 100, (8, 2, 64, 64)).astype(np.float32)
    labels = (images[:, 0] > 70).astype(np.int64)
    config = replace(PRESETS["cpu"], image_channels=2, num_classes=2, iterations=2, batch_size=4)
    model = train_stylegan2(images, labels, config, seed=0, device="cuda", progress=False)
    path = model.save(tmp_path / "g.safetensors")
    cpu_images, cpu_labels = StyleGAN2Model.load(path, "cpu").generate([3, 4])
    gpu_images, gpu_labels = StyleGAN2Model.load(path, "cuda").generate([3, 4])
    assert np.isfinite(gpu_images).all()
    np.testing.assert_allclose(gpu_images, cpu_images, atol=0.05 * float(np.ptp(cpu_images)))
    assert np.mean(gpu_labels == cpu_labels) > 0.99


def test_arhnet_trains_on_cuda_and_harmonizes_alike_on_cpu(tmp_path) -> None:
    trained = train_harmonizer([make_phantom(10), make_phantom(11)], small_config("arhnet", iterations=3), seed=0,
                               device="cuda", progress=False)
    assert next(trained.generator.parameters()).device.type == "cuda"
    assert all(np.isfinite(value) for step in trained.training_log for value in step.values())
    path = save_harmonizer(trained, tmp_path / "arhnet.safetensors")
    image, lesion, _ = make_phantom(20)
    composite = np.where(lesion > 0, image * 1.3, image).astype(np.float32)
    on_cpu = harmonize_volume(load_harmonizer(path, "cpu"), composite, lesion)
    on_gpu = harmonize_volume(load_harmonizer(path, "cuda"), composite, lesion)
    assert np.isfinite(on_gpu).all() and not np.array_equal(on_gpu, composite)
    np.testing.assert_allclose(on_gpu, on_cpu, atol=2e-3)  # cuDNN convolutions run in TF32 on the GPU


def test_selftrain_with_stock_nnunet_on_cuda_and_parallel_executor(nnunet_dirs, tmp_path, monkeypatch) -> None:
    """Two folds trained at once by the parallel executor (one GPU: both share it), ensemble prediction on the GPU,
    then one self-training iteration: the stock nnU-Net commands with ``-device cuda`` end to end."""
    for variable, value in {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "1"}.items():
        monkeypatch.setenv(variable, value)
    folder = write_phantom_dataset(801, "ST", cases_a=5, cases_b=3, seed=1, shape=(12, 16, 16))
    workdir = tmp_path / "selftrain"
    assert main(["selftrain", "-d", "801", "-o", "810", "-tr", "nnUNetTrainerSelfTrain_smoke", "-f", "0", "1",
                 "--iterations", "1", "--epsilon", "0", "--unlabelled", str(folder / "imagesTs"), "--executor",
                 "parallel", "--workers", "2", "--device", "cuda", "-np", "2", "--workdir", str(workdir)]) == 0
    logs = sorted((workdir / "logs").glob("iteration_*_fold_*.log"))
    assert len(logs) == 4 and all("Using device: cuda" in log.read_text() for log in logs)
    results = Path(nnunet_dirs["nnUNet_results"]) / "Dataset810_STST1"
    assert len(list(results.glob("*/fold_*/checkpoint_final.pth"))) == 2
    out = tmp_path / "predicted"
    assert main(["predict", "-d", "810", "-tr", "nnUNetTrainerSelfTrain_smoke", "-f", "0", "1", "-i",
                 str(folder / "imagesTs"), "-o", str(out), "--largest-component", "--device", "cuda", "-np", "1"]) == 0
    assert sorted(p.name for p in out.glob("*.nii.gz")) == sorted(p.name for p in (folder / "labelsTs").iterdir())
