"""GBA in the nnU-Net pipeline: singan train -> render gba -> preprocess -> nnUNetTrainerGBA / GBAOnline (tiny)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import ZScoreNormalization

from nnunet_gen.augment.gba import GenerativeBlending, axial_weighting_mask, blend_in_window, singan_window
from nnunet_gen.augment.intensity import case_channel_stats
from nnunet_gen.augment.transforms import CaseContext, GBAPatchTransform
from nnunet_gen.cli import main
from nnunet_gen.convert.phantom import phantom_case
from nnunet_gen.errors import DataError
from nnunet_gen.generators.singan import brightest_slice
from nnunet_gen.io.files import sha256_of_file, write_text
from nnunet_gen.io.images import read_image, write_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.preprocess import plan_and_preprocess
from nnunet_gen.qc.tumour_distribution import TumourMeasurement, propose_alphas
from nnunet_gen.render.dataset import render_dataset
from nnunet_gen.render.gba import gba_renderer
from synth.singan import SinGAN, SinGANConfig, train_singan

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
RENDER = ["--alphas", "0.5", "1.5", "--scales", "2", "--dilation", "2", "--sigma", "1", "--threads", "1"]




@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """Phantom 701 (5 centre-A cases + one without tumour), a tiny SinGAN, GBA render 702."""
    root = tmp_path_factory.mktemp("gba")
    env = {"nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "res")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        assert main(["phantom", "-d", "701", "--name", "G", "--cases-a", "5", "--cases-b", "2",
                     "--shape", "16", "24", "24"]) == 0
        source = RawDataset.find(701)
        image, geometry = read_image(source.image_files("phantomA_000")[0])
        write_image(image, geometry, source.image_files("phantomA_empty")[0])
        write_image(np.zeros(image.shape, np.uint8), geometry, source.label_file("phantomA_empty"))
        dataset_json = {**source.dataset_json, "numTraining": source.dataset_json["numTraining"] + 1}
        write_text(source.folder / "dataset.json", json.dumps(dataset_json))
        singan = root / "singan.safetensors"
        assert main(["singan", "train", "-d", "701", "--case", "phantomB_000", "--images-folder", "imagesTs",
                     "-o", str(singan), "--min-size", "8", "--max-size", "24", "--iters", "2"]) == 0
        assert main(["render", "gba", "-d", "701", "-o", "702", "--singan", str(singan), *RENDER]) == 0
        yield {"root": root, "env": env, "singan": singan, "mp": mp}


def test_singan_train_records_its_slice(work):
    meta = json.loads(Path(f"{work['singan']}.json").read_text())
    volume = RawDataset.find(701).read_case("phantomB_000", "imagesTs", None).images[0]
    assert meta["training_slice"]["slice"] == brightest_slice(volume)
    assert SinGAN.load(work["singan"]).num_scales == 6  # 8 -> 24 px at factor 0.75


def test_render_gba_geometry_far_voxels_manifest_and_skip(work):
    raw = RawDataset.find(702)
    manifest = Manifest.load(raw.folder)
    assert manifest.skipped == {"phantomA_empty": "no voxels with labels [1]"}
    synthetic = manifest.of_kind("synthetic")
    assert len(synthetic) == 10  # 5 cases x 2 alphas x 1 scale x 1 sample
    sha = sha256_of_file(work["singan"])
    for case_id in synthetic:
        record = manifest.cases[case_id]
        assert record.generator == "gba" and record.checkpoint_sha256 == sha and record.seed == record.params["seed"]
        assert {"alpha", "start_scale", "seed", "labels", "dilation_radius", "sigma"} <= set(record.params)
        assert record.params["start_scale"] == 4 and record.params["labels"] == [1]
        source = raw.read_case(record.source_case)
        copy = raw.read_case(case_id)
        assert copy.geometry.matches(source.geometry) and copy.images.shape == source.images.shape
        np.testing.assert_array_equal(copy.label, source.label)
        weights = axial_weighting_mask(source.label == 1, 2, 1.0)
        np.testing.assert_array_equal(copy.images[0][weights == 0], source.images[0][weights == 0])
        tumour = source.label == 1
        ratio = copy.images[0][tumour].mean() / source.images[0][tumour].mean()
        assert (ratio < 0.8) if record.params["alpha"] == 0.5 else (ratio > 1.2)
        rerendered = GenerativeBlending.from_parameters(record.params)(source.images[0], source.label,
                                                                       SinGAN.load(work["singan"]))
        np.testing.assert_allclose(copy.images[0], rerendered, atol=1e-3)  # re-rendered from the manifest


def test_keep_contrast_and_min_contrast(work):
    """--keep-contrast gives every copy the naive copy's contrast; --min-contrast drops invisible tumours (alpha
    0.73 brings the phantom's bright tumours, contrast ~1.37, to ~1.0) and lists them in the manifest."""
    assert main(["render", "gba", "-d", "701", "-o", "711", "--singan", str(work["singan"]), "--keep-contrast",
                 "--min-contrast", "0.1", *RENDER[:1], "0.5", "0.73", "1.5", *RENDER[3:]]) == 0
    manifest = Manifest.load(RawDataset.find(711).folder)
    kept = [manifest.cases[c].params for c in manifest.of_kind("synthetic")]
    dropped = {c: why for c, why in manifest.skipped.items() if c != "phantomA_empty"}
    assert len(kept) + len(dropped) == 15 and {p["alpha"] for p in kept} == {0.5, 1.5}
    assert dropped and all("tumour invisible" in why for why in dropped.values())
    for params in kept:
        contrast = params["contrast"]
        assert params["keep_contrast"] and contrast["output"] == pytest.approx(contrast["naive"], abs=2e-4)
        assert abs(contrast["output"] - 1) >= 0.1 and contrast["original"] > 1.2
    assert not any((RawDataset.find(711).folder / "imagesTr").glob("*_gba01_0000.nii.gz"))


def test_several_singans_each_copy_uses_one(work, tmp_path, capsys):
    second = tmp_path / "second.safetensors"
    assert main(["singan", "train", "-d", "701", "--case", "phantomB_001", "--images-folder", "imagesTs",
                 "-o", str(second), "--min-size", "8", "--max-size", "24", "--iters", "2"]) == 0
    assert main(["render", "gba", "-d", "701", "-o", "712", "--singan", str(work["singan"]), str(second),
                 *RENDER]) == 0
    raw = RawDataset.find(712)
    manifest = Manifest.load(raw.folder)
    singans = [SinGAN.load(work["singan"]), SinGAN.load(second)]
    shas = [sha256_of_file(work["singan"]), sha256_of_file(second)]
    records = [manifest.cases[c] for c in manifest.of_kind("synthetic")]
    assert {r.params["singan_index"] for r in records} == {0, 1}
    for record in records:
        index = record.params["singan_index"]
        assert record.checkpoint_sha256 == shas[index]
        source = raw.read_case(record.source_case)
        again = GenerativeBlending.from_parameters(record.params)(source.images[0], source.label, singans[index])
        np.testing.assert_allclose(raw.read_case(record.case_id).images[0], again, atol=1e-3)
    other = tmp_path / "other_scales.safetensors"
    assert main(["singan", "train", "-d", "701", "--case", "phantomB_001", "--images-folder", "imagesTs",
                 "-o", str(other), "--min-size", "12", "--max-size", "24", "--iters", "1"]) == 0
    capsys.readouterr()
    assert main(["render", "gba", "-d", "701", "-o", "713", "--singan", str(work["singan"]), str(other),
                 *RENDER]) == 2
    assert "different numbers of scales" in capsys.readouterr().err


def test_render_resumes_after_interruption_with_identical_output(work):
    renderer = gba_renderer([str(work["singan"])], alphas=(0.5, 1.5), generators_retained=(2,), dilation_radius=2,
                            sigma=1.0)
    seen = []

    def interrupted(case):
        seen.append(case.case_id)
        if len(seen) == 3:
            raise KeyboardInterrupt
        return renderer(case)

    job = {"command": "render gba", "test": "resume"}
    with pytest.raises(KeyboardInterrupt):
        render_dataset(701, 705, "Resumed", interrupted, job)
    assert (Path(work["env"]["nnUNet_raw"]) / ".Dataset705_Resumed.partial").is_dir()
    render_dataset(701, 705, "Resumed", renderer, job)
    first, resumed = RawDataset.find(702), RawDataset.find(705)
    assert resumed.case_ids() == first.case_ids()
    for case_id in first.case_ids():
        np.testing.assert_array_equal(resumed.read_case(case_id).images, first.read_case(case_id).images)


def test_no_blend_equals_render_naive(work):
    assert main(["render", "gba", "-d", "701", "-o", "703", "--no-blend", "--alphas", "0.5", "1.5"]) == 0
    assert main(["render", "naive", "-d", "701", "-o", "704", "--alphas", "0.5", "1.5"]) == 0
    gba, naive = RawDataset.find(703), RawDataset.find(704)
    synthetic = Manifest.load(naive.folder).of_kind("synthetic")
    assert len(synthetic) == 10
    for case_id in synthetic:
        np.testing.assert_array_equal(gba.read_case(case_id.replace("naive", "gba")).images,
                                      naive.read_case(case_id).images)


def test_bad_input_is_one_line_and_writes_nothing(work, capsys, tmp_path):
    raw_root = Path(work["env"]["nnUNet_raw"])
    assert main(["render", "gba", "-d", "701", "-o", "706", "--singan", str(work["singan"]), "--alphas", "0"]) == 2
    small = train_singan(RawDataset.find(701).read_case("phantomA_000").images[0, 8, 4:20, 4:20],
                         SinGANConfig(min_size=8, max_size=16, iterations_per_scale=1), progress=False)
    small_path = small.save(tmp_path / "small.safetensors")
    assert main(["render", "gba", "-d", "701", "-o", "706", "--singan", str(small_path), "--scales", "1"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("nnunet-gen: error")]
    assert len(errors) == 2 and "alpha must be > 0" in errors[0] and "SinGAN's 16 px slice" in errors[1]
    assert not [p for p in raw_root.iterdir() if "706" in p.name]


def test_window_pastes_a_singan_sized_crop_back(work):
    singan = SinGAN.load(work["singan"])  # 24 x 24 slices
    image, label = phantom_case(3, "A", shape=(6, 40, 30), tumour_radius=(2.0, 3.0))
    transform = GenerativeBlending(0.5, 2, dilation_radius=1, sigma=0.5, seed=4)
    out, window = blend_in_window(transform, image, label, singan)
    (y0, y1), (x0, x1) = window.crops
    assert (y1 - y0, x1 - x0) == (24, 24) and window.pads == ((0, 0), (0, 0))
    weights = axial_weighting_mask(label == 1, 1, 0.5)
    np.testing.assert_array_equal(out[weights == 0], image[weights == 0])
    np.testing.assert_array_equal(out[:, y0:y1, x0:x1],
                                  transform(image[:, y0:y1, x0:x1], label[:, y0:y1, x0:x1], singan))
    padded = singan_window(np.ones((2, 20, 30), bool)[:, :, :20], (24, 24), 0)
    assert padded.pads == ((2, 2), (2, 2))
    with pytest.raises(DataError, match="more than the SinGAN's 24 px"):
        singan_window(np.ones((2, 40, 40), bool), (24, 24), 0)


def test_online_transform_matches_offline_gba(work):
    singan = SinGAN.load(work["singan"])
    raw, label = phantom_case(11, "A", shape=(10, 24, 24))
    data, seg, _ = crop_to_nonzero(raw[None], label[None].astype(np.int16))
    normalised = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(data[0].copy(), seg[0])
    stats = case_channel_stats(raw[None], label, ["ZScoreNormalization"], [False], {}, (1,))
    transform = GBAPatchTransform(singan, (0.5,), (2,), (1,), 2, 1.0, 0, [False], CaseContext({"a": stats}), 1.0)
    gba = GenerativeBlending(0.5, 3, (1,), 2, 1.0, seed=9)
    out = transform._apply_to_image(torch.from_numpy(normalised[None].copy()), transform=gba, stats=stats[0],
                                    label=torch.from_numpy(seg[0]))[0].numpy()
    offline, _ = blend_in_window(gba, data[0], seg[0], singan)  # cropped to the brain: padded to 24 x 24
    expected = ZScoreNormalization(use_mask_for_norm=False, intensityproperties={}).run(offline, seg[0])
    np.testing.assert_allclose(out, expected, atol=0.03)  # case statistics after eq. 5 approximate those after GBA
    assert np.abs(out - normalised).max() > 0.5
    transform.context.current = "a"  # as CaseContextDataset.load_case does; p = 1: every patch is blended
    called = transform(image=torch.from_numpy(normalised[None].copy()), segmentation=torch.from_numpy(seg))
    assert called["image"].shape == (1, *normalised.shape) and torch.equal(called["segmentation"],
                                                                          torch.from_numpy(seg))
    assert (called["image"][0].numpy() != normalised).any()
    keeping = GBAPatchTransform(singan, (0.5,), (2,), (1,), 2, 1.0, 0, [False], CaseContext({"a": stats}), 1.0,
                                keep_contrast=True)
    keeping.context.current = "a"
    assert keeping.get_parameters(segmentation=torch.from_numpy(seg))["transform"].keep_contrast


def test_propose_alphas_covers_the_target():
    source = [TumourMeasurement(f"s{i}", 500.0, 0.8, r) for i, r in enumerate([1.4, 1.5, 1.6])]
    target = [TumourMeasurement(f"t{i}", 500.0, 0.3, r) for i, r in enumerate([0.6, 0.7, 0.8, 1.5])]
    proposal = propose_alphas(source, target, 2)
    assert proposal["coverage_before"] == 0.25 and proposal["coverage_predicted_after"] == 1.0
    assert 0.4 < proposal["alphas"][0] < 0.5 < proposal["alphas"][1] < 1.1


def test_distribution_and_qc_commands(work, tmp_path):
    source = Path(work["env"]["nnUNet_raw"]) / "Dataset701_G"
    assert main(["tumour-distribution", "-d", "702", "--images", str(source / "imagesTs"), "--pseudo-labels",
                 str(source / "labelsTs"), "-o", str(tmp_path / "dist"), "--propose-alphas", "2"]) == 0
    report = json.loads((tmp_path / "dist" / "tumour_distribution.json").read_text())
    assert [report["summary"][k]["n"] for k in ("source", "augmented", "target")] == [5, 10, 2]
    assert len(report["proposal"]["alphas"]) == 2 and (tmp_path / "dist" / "tumour_distribution.png").is_file()
    assert main(["qc", "gba", "-d", "702", "-o", str(tmp_path / "qc.png"), "--cases", "2"]) == 0
    assert (tmp_path / "qc.png").stat().st_size > 10_000
    assert main(["qc", "gba", "-d", "702", "-o", str(tmp_path / "qc_target.png"), "--cases", "2",
                 "--target-image", str(source / "imagesTs" / "phantomB_000_0000.nii.gz"),
                 "--target-label", str(source / "labelsTs" / "phantomB_000.nii.gz")]) == 0
    assert (tmp_path / "qc_target.png").stat().st_size > (tmp_path / "qc.png").stat().st_size


def test_stock_nnunet_trains_gba_offline_and_online(work, tmp_path):
    """Stock nnUNetv2_train on a rendering with every render option of issue 14 (two SinGANs, contrast kept,
    invisible copies dropped), and the online trainer with the contrast kept."""
    second = tmp_path / "second.safetensors"
    assert main(["singan", "train", "-d", "701", "--case", "phantomB_001", "--images-folder", "imagesTs",
                 "-o", str(second), "--min-size", "8", "--max-size", "24", "--iters", "2"]) == 0
    assert main(["render", "gba", "-d", "701", "-o", "714", "--name", "GGBA", "--singan", str(work["singan"]),
                 str(second), "--keep-contrast", "--min-contrast", "0.1", *RENDER]) == 0
    work["mp"].setenv("nnUNet_def_n_proc", "1")
    plan_and_preprocess(701, num_processes=1)
    plan_and_preprocess(714, num_processes=1)
    root = work["root"]
    env = {**os.environ, **work["env"], "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_n_proc_DA": "0",
           "nnUNet_extTrainer": str(REPO / "trainers"), "nnunet_gen_SINGAN": str(work["singan"]),
           "OMP_NUM_THREADS": "1"}
    for dataset, trainer in (("714", "nnUNetTrainerGBA_smoke"), ("701", "nnUNetTrainerGBAOnlineKeepContrast_smoke")):
        result = subprocess.run([BIN / "nnUNetv2_train", dataset, "3d_fullres", "0", "-tr", trainer, "-device", "cpu"],
                                env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    manifest = Manifest.load(root / "raw" / "Dataset714_GGBA")
    fold = root / "res" / "Dataset714_GGBA" / "nnUNetTrainerGBA_smoke__nnUNetPlans__3d_fullres" / "fold_0"
    validated = [p.name[:-7] for p in (fold / "validation").glob("*.nii.gz")]
    assert validated and all(manifest.cases[c].kind == "real" for c in validated)
    split = json.loads((root / "pre" / "Dataset714_GGBA" / "splits_final.json").read_text())[0]
    assert not any(manifest.cases[c].source_case in validated for c in split["train"])
    online = (root / "res" / "Dataset701_G" / "nnUNetTrainerGBAOnlineKeepContrast_smoke__nnUNetPlans__3d_fullres"
              / "fold_0")
    assert (online / "checkpoint_final.pth").is_file()
    assert any("GBA online: SinGAN" in p.read_text() for p in online.glob("training_log_*.txt"))
