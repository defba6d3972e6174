"""End to end with the stock nnU-Net commands in subprocesses, as a user runs them (CPU, tiny data, smoke schedule).

phantom -> nnunet-gen render naive -> nnUNetv2_plan_and_preprocess + nnunet-gen splits (source) and
nnunet-gen preprocess (rendered, source plans) -> nnUNetv2_train -tr nnUNetTrainerNaiveRescale_smoke for 5 folds
with nnUNet_extTrainer set -> nnUNetv2_predict -f 0 1 2 3 4. Training on rendered datasets (nnU-Net validating on
real cases only) is exercised by the GBA, ARH and self-training pipeline tests.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_gen.io.images import read_image
from nnunet_gen.io.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def _run(args, env, timeout=600):
    result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    env = {**os.environ, "nnUNet_raw": str(root / "raw"), "nnUNet_preprocessed": str(root / "pre"),
           "nnUNet_results": str(root / "res"), "nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}
    out = _run([BIN / "nnunet-gen", "ext-trainer"], env)
    assert out.strip() == f"export nnUNet_extTrainer={REPO / 'trainers'}"
    env["nnUNet_extTrainer"] = str(REPO / "trainers")
    env["root"] = str(root)
    return env


def test_stock_pipeline_with_naive_rescale_trainer(env):
    root = Path(env["root"])
    _run([BIN / "nnunet-gen", "phantom", "-d", "601", "--name", "E2E", "--cases-a", "5", "--cases-b", "2",
          "--shape", "16", "24", "24"], env)
    _run([BIN / "nnunet-gen", "render", "naive", "-d", "601", "-o", "602"], env)
    _run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "601", "-c", "3d_fullres", "-np", "1"], env)
    _run([BIN / "nnunet-gen", "splits", "-d", "601"], env)
    _run([BIN / "nnunet-gen", "preprocess", "-d", "602", "-np", "1"], env)

    split = json.loads((root / "pre" / "Dataset602_E2ENaive" / "splits_final.json").read_text())
    manifest = Manifest.load(root / "raw" / "Dataset602_E2ENaive")
    assert all(manifest.cases[c].kind == "real" for fold in split for c in fold["val"])
    plans = [json.loads((root / "pre" / d / "nnUNetPlans.json").read_text())["configurations"]["3d_fullres"]
             for d in ("Dataset601_E2E", "Dataset602_E2ENaive")]
    assert plans[0]["batch_size"] == plans[1]["batch_size"] and plans[0]["patch_size"] == plans[1]["patch_size"]

    train_env = {**env, "nnUNet_n_proc_DA": "0"}
    for fold in range(5):
        log = _run([BIN / "nnUNetv2_train", "601", "3d_fullres", str(fold), "-tr", "nnUNetTrainerNaiveRescale_smoke",
                    "-device", "cpu"], train_env)
        assert "Found class nnUNetTrainerNaiveRescale_smoke in nnunet_gen_trainers" in log  # via nnUNet_extTrainer
    trained = root / "res" / "Dataset601_E2E" / "nnUNetTrainerNaiveRescale_smoke__nnUNetPlans__3d_fullres"
    assert all((trained / f"fold_{f}" / "checkpoint_final.pth").is_file() for f in range(5))
    assert (root / "pre" / "Dataset601_E2E" / "nnunet_gen_intensity_stats.json").is_file()

    out = root / "pred"
    _run([BIN / "nnUNetv2_predict", "-i", root / "raw" / "Dataset601_E2E" / "imagesTs", "-o", out, "-d", "601",
          "-c", "3d_fullres", "-tr", "nnUNetTrainerNaiveRescale_smoke", "-f", "0", "1", "2", "3", "4",
          "-device", "cpu", "-npp", "1", "-nps", "1"], env)
    for case in ("phantomB_000", "phantomB_001"):
        prediction, geometry = read_image(out / f"{case}.nii.gz")
        _, reference_geometry = read_image(root / "raw" / "Dataset601_E2E" / "labelsTs" / f"{case}.nii.gz")
        assert prediction.shape == (16, 24, 24) and set(np.unique(prediction)) <= {0, 1}
        assert geometry.matches(reference_geometry)
