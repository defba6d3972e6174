"""``stylegan train`` / ``render stylegan`` / ``gen-eval``: joint image + label fakes into raw datasets with exact
re-rendering, the quality report, bad input, and stock nnU-Net (2d) training on a rendered dataset."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_gen.cli import main
from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.evaluation.generative import consistency_summary
from nnunet_gen.generators.stylegan import square_slice, training_slices
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.images import read_image
from nnunet_gen.io.manifest import Manifest

SHAPE = (6, 20, 24)
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A phantom (5 labelled cases, 1 mm) and a 2-iteration 64x64 StyleGAN2 trained on its slices."""
    root = tmp_path_factory.mktemp("stylegan")
    dirs = {name: root / name for name in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    previous = {name: os.environ.get(name) for name in dirs}
    for name, path in dirs.items():
        path.mkdir()
        os.environ[name] = str(path)
    write_phantom_dataset(600, "Ph", 5, 1, shape=SHAPE, spacing_zyx=(2.0, 1.0, 1.0))
    checkpoint = root / "g.safetensors"
    assert main(["stylegan", "train", "-d", "600", "-o", str(checkpoint), "--iters", "2", "--sample-every", "1"]) == 0
    yield root, dirs, checkpoint
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


def test_slices_are_padded_square_and_resampled():
    images = np.arange(2 * 4 * 8, dtype=np.float32).reshape(2, 4, 8)
    label = np.zeros((4, 8), np.int64)
    label[1:3, 2:4] = 1
    out, out_label = square_slice(images, label, 16)
    assert out.shape == (2, 16, 16) and out_label.shape == (16, 16)
    assert out[0, 0, 0] == images[0].min()  # padding with the channel minimum
    assert out_label[6:10, 4:8].all() and out_label.sum() == 16  # rows 1:3 -> padded 3:5 -> x2


def test_training_writes_checkpoint_provenance_and_sample_grids(trained):
    root, _, checkpoint = trained
    provenance = json.loads((root / "g.safetensors.json").read_text())
    assert provenance["slices"] == 5 * SHAPE[0] and provenance["labels"] == {"background": 0, "tumour": 1}
    assert provenance["spacing_zyx"] == pytest.approx([2.0, 24 / 64, 24 / 64])  # side 24 -> 64 pixels
    assert (root / "g_samples_000001.png").is_file() and (root / "g_samples_final.png").is_file()
    images, labels, _ = training_slices(600, 64)
    assert images.shape == (30, 1, 64, 64) and labels.shape == (30, 64, 64)


def test_render_is_exact_per_latent_seed_and_records_it(trained):
    _, dirs, checkpoint = trained
    assert main(["render", "stylegan", "-d", "600", "-o", "601", "--checkpoint", str(checkpoint), "--num", "3",
                 "--seed", "10", "--with-real"]) == 0
    assert main(["render", "stylegan", "-d", "600", "-o", "602", "--checkpoint", str(checkpoint), "--num", "1",
                 "--seed", "11"]) == 0
    first, second = dirs["nnUNet_raw"] / "Dataset601_PhStyleGAN", dirs["nnUNet_raw"] / "Dataset602_PhStyleGAN"
    manifest = Manifest.load(first)
    assert manifest.base_cases() == [f"phantomA_{i:03d}" for i in range(5)]
    record = manifest.cases["fake_000011"]
    assert (record.kind, record.seed, record.params["latent_seed"]) == ("synthetic", 11, 11)
    assert record.checkpoint_sha256 == sha256_of_file(checkpoint)
    image, geometry = read_image(first / "imagesTr" / "fake_000011_0000.nii.gz")
    again, _ = read_image(second / "imagesTr" / "fake_000011_0000.nii.gz")
    assert image.shape == (1, 64, 64) and np.array_equal(image, again)  # same seed, another batch: same case
    assert geometry.spacing == pytest.approx((24 / 64, 24 / 64, 2.0))
    label, _ = read_image(first / "labelsTr" / "fake_000011.nii.gz")
    assert set(np.unique(label)) <= {0, 1}


def test_gen_eval_reports_every_metric(trained, tmp_path):
    _, _, checkpoint = trained
    assert main(["gen-eval", "-d", "600", "--checkpoint", str(checkpoint), "--num", "6", "-o", str(tmp_path / "e"),
                 "--feature-iters", "5"]) == 0
    summary = json.loads((tmp_path / "e" / "gen_eval.json").read_text())
    for key in ("fid_axial", "bmmd2", "ms_ssim_fake_pairs", "ms_ssim_real_pairs", "nearest_real_ms_ssim_mean",
                "real_to_real_nearest_ms_ssim_mean"):
        assert np.isfinite(summary[key]), key
    assert (tmp_path / "e" / "gen_eval.png").is_file() and (tmp_path / "e" / "gen_eval.csv").is_file()


def test_consistency_summary_separates_slices_with_foreground():
    labels = np.zeros((3, 4, 4), np.int64)
    labels[1:, 0, 0] = 1
    summary = consistency_summary(np.array([1.0, 0.5, 0.0]), labels)  # the empty slice agreed: Dice 1
    assert summary == pytest.approx({"dice": 0.5, "foreground_fraction": 2 / 3, "dice_foreground": 0.25})


def test_bad_input_is_one_line(trained, tmp_path, capsys):
    _, dirs, checkpoint = trained
    (tmp_path / "foreign.safetensors").write_bytes(b"nope")
    assert main(["render", "stylegan", "-d", "600", "-o", "603", "--checkpoint", str(tmp_path / "foreign.safetensors"),
                 "--num", "2"]) == 2
    assert "cannot load StyleGAN2 checkpoint" in capsys.readouterr().err
    assert main(["render", "stylegan", "-d", "600", "-o", "603", "--checkpoint", str(checkpoint), "--num", "2",
                 "--truncation", "1.5"]) == 2
    assert "psi must be in [0, 1]" in capsys.readouterr().err
    assert main(["stylegan", "train", "-d", "600", "-o", str(tmp_path / "x.safetensors"), "--resolution", "48"]) == 2
    assert "stylegan train" in capsys.readouterr().err
    assert not (dirs["nnUNet_raw"] / "Dataset603_PhStyleGAN").exists()


def test_stock_nnunet_trains_2d_on_fakes_and_reals(trained):
    """``nnUNetv2_plan_and_preprocess -c 2d`` + ``nnUNetv2_train ... 2d`` (smoke schedule) on a rendered dataset."""
    _, dirs, checkpoint = trained
    assert main(["render", "stylegan", "-d", "600", "-o", "604", "--name", "Mixed", "--checkpoint", str(checkpoint),
                 "--num", "4", "--with-real"]) == 0
    env = {**os.environ, "nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}
    bin_dir = Path(sys.executable).parent
    subprocess.run([str(bin_dir / "nnUNetv2_plan_and_preprocess"), "-d", "604", "-c", "2d", "-np", "1"], env=env,
                   check=True, capture_output=True)
    result = subprocess.run([str(bin_dir / "nnUNetv2_train"), "604", "2d", "0", "-tr", "nnUNetTrainer_smoke",
                             "-device", "cpu"], capture_output=True, text=True,
                            env={**env, "nnUNet_n_proc_DA": "0", "nnUNet_extTrainer": str(REPO / "trainers")})
    assert result.returncode == 0, result.stderr[-2000:]
    trained_fold = dirs["nnUNet_results"] / "Dataset604_Mixed" / "nnUNetTrainer_smoke__nnUNetPlans__2d" / "fold_0"
    assert (trained_fold / "checkpoint_final.pth").is_file()


def test_gen_eval_label_consistency_through_a_trained_nnunet(trained, tmp_path):
    """``gen-eval --segmenter``: the 2d nnU-Net trained above predicts every fake and a real reference set through
    stock ``nnUNetv2_predict``; per-fake Dice in the CSV, the means in the JSON."""
    _, dirs, checkpoint = trained
    fold = dirs["nnUNet_results"] / "Dataset604_Mixed" / "nnUNetTrainer_smoke__nnUNetPlans__2d" / "fold_0"
    if not (fold / "checkpoint_final.pth").is_file():
        pytest.fail("needs the segmenter of test_stock_nnunet_trains_2d_on_fakes_and_reals (run the module)")
    out = tmp_path / "e"
    assert main(["gen-eval", "-d", "600", "--checkpoint", str(checkpoint), "--num", "4", "-o", str(out),
                 "--feature-iters", "5", "--segmenter", "604", "-tr", "nnUNetTrainer_smoke", "-c", "2d", "-f", "0",
                 "-device", "cpu"]) == 0
    summary = json.loads((out / "gen_eval.json").read_text())
    assert summary["segmenter"] == "604 nnUNetTrainer_smoke 2d nnUNetPlans folds [0]"
    assert summary["label_consistency_real_slices"] == 4
    for key in ("label_consistency_dice", "label_consistency_real_dice", "label_consistency_real_foreground_fraction"):
        assert 0.0 <= summary[key] <= 1.0, key
    header = (out / "gen_eval.png").read_bytes()[16:24]  # PNG IHDR: width, height
    assert int.from_bytes(header[:4], "big") > 2.5 * int.from_bytes(header[4:], "big")  # the consistency panel too
    rows = (out / "gen_eval.csv").read_text().splitlines()
    assert rows[0].split(",")[-1] == "label_dice" and len(rows) == 5
    assert all(0.0 <= float(row.split(",")[-1]) <= 1.0 for row in rows[1:])
