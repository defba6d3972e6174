"""``nnunet-gen translate`` / ``render translate`` / ``crossmoda``: pseudo-target datasets with provenance, the
paper's failure-case rule, resuming, and one tiny end-to-end run through stock nnU-Net."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from nnunet_gen.cli import main
from nnunet_gen.convert.crossmodal_phantom import write_crossmodal_phantom
from nnunet_gen.crossmoda import CrossModa, CrossModaConfig, FailureCase
from nnunet_gen.evaluation.translation import image_quality, translation_quality
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.images import read_image, write_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.run.executors import TrainJob

SHAPE = (10, 32, 32)
TINY = ["--preset", "cpu", "--translation-iters", "2"]


@pytest.fixture
def crossmodal(nnunet_dirs):
    """Cross-modal phantom: 5 labelled T1 cases (+ paired T2), 2 unlabelled T2, 2 labelled T2 test cases, and the
    test cases again as a labelled validation folder."""
    folder = write_crossmodal_phantom(400, "XM", 5, 2, 2, shape=SHAPE)
    shutil.copytree(folder / "imagesTs", folder / "imagesVal")
    shutil.copytree(folder / "labelsTs", folder / "labelsVal")
    return folder, nnunet_dirs


def test_translate_and_render_write_a_pseudo_target_dataset_with_provenance(crossmodal, tmp_path, capsys):
    folder, dirs = crossmodal
    checkpoint = tmp_path / "t.safetensors"
    assert main(["translate", "train", "-d", "400", "-o", str(checkpoint), "--iters", "2", "--runs", "2",
                 "--seed", "5", "--method", "cut"]) == 0
    runs = [tmp_path / "t_seed5.safetensors", tmp_path / "t_seed6.safetensors"]
    assert all(p.is_file() for p in runs) and (tmp_path / "t_seed5_losses.png").is_file()
    provenance = json.loads((tmp_path / "t_seed5.safetensors.json").read_text())
    assert provenance["source_cases"] == [f"sourceA_{i:03d}" for i in range(5)] and provenance["seed"] == 5
    assert main(["render", "translate", "-d", "400", "-o", "401", "--translator", *map(str, runs),
                 "--deconvolve", "1.0", "--vc-iterations", "3"]) == 0
    pseudo = dirs["nnUNet_raw"] / "Dataset401_XMPseudo"
    manifest = Manifest.load(pseudo)
    assert sorted(manifest.cases) == sorted(f"sourceA_{i:03d}_run{k}" for i in range(5) for k in range(2))
    record = manifest.cases["sourceA_002_run1"]
    assert (record.kind, record.group, record.generator) == ("translated", "sourceA_002", "translate")
    assert record.checkpoint_sha256 == sha256_of_file(runs[1]) and record.params["deconvolution"]["iterations"] == 3
    assert json.loads((pseudo / "dataset.json").read_text())["channel_names"] == {"0": "T2"}
    label, _ = read_image(pseudo / "labelsTr" / "sourceA_002_run1.nii.gz")
    original, _ = read_image(folder / "labelsTr" / "sourceA_002.nii.gz")
    assert np.array_equal(label, original)  # labels copied, not translated
    assert sorted(p.name for p in (pseudo / "imagesUnlabelledTr").iterdir()) == sorted(
        p.name for p in (folder / "imagesUnlabelledTr").iterdir())  # the target pool travels along
    splits = json.loads((dirs["nnUNet_preprocessed"] / pseudo.name / "splits_final.json").read_text())
    assert all({c.rsplit("_", 1)[0] for c in fold["val"]} and len(fold["val"]) == 2 for fold in splits)
    rows = translation_quality(401, folder / "imagesTrTarget")
    assert len(rows) == 10 and all(np.isfinite(r["PSNR"]) and -1 <= r["SSIM"] <= 1 for r in rows)


def test_image_quality_is_perfect_for_the_reference_and_worse_for_a_distortion():
    rng = np.random.default_rng(0)
    reference = rng.uniform(0, 100, (4, 24, 24)).astype(np.float32)
    perfect = image_quality(reference, reference)
    assert perfect["MAE"] == 0 and perfect["SSIM"] == pytest.approx(1.0) and perfect["PSNR"] >= 99
    worse = image_quality(reference + rng.normal(0, 10, reference.shape).astype(np.float32), reference)
    assert worse["MAE"] > 0 and worse["SSIM"] < 0.99 and worse["PSNR"] < 40


def test_translation_bad_input_is_one_line(crossmodal, tmp_path, capsys):
    folder, _ = crossmodal
    shutil.rmtree(folder / "imagesUnlabelledTr")
    assert main(["translate", "train", "-d", "400", "-o", str(tmp_path / "t.safetensors"), "--iters", "2"]) == 2
    assert "missing target pool" in capsys.readouterr().err
    assert main(["translate", "train", "-d", "400", "-o", str(tmp_path / "t.safetensors"), "--iters", "2",
                 "--target-images", str(folder / "imagesTs"), "--source-cases", "nobody*"]) == 2
    assert "no labelled source case matches" in capsys.readouterr().err
    (tmp_path / "foreign.safetensors").write_bytes(b"not a checkpoint")
    assert main(["render", "translate", "-d", "400", "-o", "402", "--translator",
                 str(tmp_path / "foreign.safetensors")]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "cannot load translation checkpoint" in error
    assert main(["render", "translate", "-d", "400", "-o", "402", "--translator",
                 str(tmp_path / "foreign.safetensors"), "--deconvolve", "1", "--vc-relaxation", "3"]) == 2
    assert "relaxation in (0, 2]" in capsys.readouterr().err
    assert not (folder.parent / "Dataset402_XMPseudo").exists()


WRITE_CHECKPOINT = "import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True, " \
                   "exist_ok=True); p.write_text('x')"


class EmptyPredictions:
    """A backend whose trainings succeed and whose predictions are empty: a failed translation (Dice 0)."""

    def __init__(self, results: Path):
        self.results, self.calls = results, []

    def checkpoint(self, dataset, fold):
        return self.results / dataset / f"fold_{fold}" / "checkpoint_final.pth"

    def is_trained(self, dataset, fold):
        return self.checkpoint(dataset, fold).is_file()

    def train_job(self, dataset, fold, log, save_probabilities=False):
        self.calls.append(("train", dataset))
        return TrainJob(f"fold {fold} of {dataset}", (sys.executable, "-c", WRITE_CHECKPOINT,
                                                      str(self.checkpoint(dataset, fold))), {}, str(log))

    def preprocess(self, dataset, source, own_plans=False):
        self.calls.append(("preprocess", dataset, own_plans))

    def predict(self, dataset, images, out, save_probabilities, log):
        self.calls.append(("predict", dataset, images.name))
        out.mkdir(parents=True, exist_ok=True)
        for image in sorted(images.glob("*_0000.nii.gz")):
            array, geometry = read_image(image)
            write_image(np.zeros(array.shape, np.uint8), geometry, out / image.name.replace("_0000", ""))


def test_a_first_stage_below_the_dice_floor_stops_the_run_and_a_rerun_resumes(crossmodal, tmp_path):
    _, dirs = crossmodal
    config = CrossModaConfig("Dataset400_XM", 410, "nnUNetTrainer_fake", translation_iterations=2, augment="naive",
                             folds=(0,), dice_floor=0.5, val_folder="imagesVal")
    backend = EmptyPredictions(tmp_path / "results")
    run = CrossModa(config, backend, workdir=tmp_path / "w", log=lambda message: None)
    with pytest.raises(FailureCase, match=r"Dataset412_XMPseudoNaive: failure case: validation Dice 0.000 after the "
                                          r"first stage is below the floor 0.5"):
        run.run()
    state = json.loads((tmp_path / "w" / "crossmoda_state.json").read_text())
    assert list(state["steps"]) == ["crop", "translate/run0", "pseudo_target", "plan", "augment/naive"]
    assert backend.calls == [("preprocess", "Dataset411_XMPseudo", True),
                             ("preprocess", "Dataset412_XMPseudoNaive", False), ("train", "Dataset412_XMPseudoNaive"),
                             ("predict", "Dataset412_XMPseudoNaive", "imagesVal")]  # no pool prediction, no ST
    assert "failure case" in (tmp_path / "w" / "crossmoda_report.md").read_text()
    assert not any(p.name.startswith("Dataset413") for p in dirs["nnUNet_raw"].iterdir())
    finished = {name: step["finished"] for name, step in state["steps"].items()}
    with pytest.raises(FailureCase):
        CrossModa(config, backend, workdir=tmp_path / "w", log=lambda message: None).run()
    again = json.loads((tmp_path / "w" / "crossmoda_state.json").read_text())
    assert {name: step["finished"] for name, step in again["steps"].items()} == finished
    assert len(backend.calls) == 4  # nothing recomputed


def test_crossmoda_refuses_bad_input_with_one_line(crossmodal, tmp_path, capsys):
    folder, dirs = crossmodal
    base = ["crossmoda", "-d", "400", "-o", "420", "-tr", "nnUNetTrainer_smoke", "--workdir", str(tmp_path / "w")]
    assert main([*base, "--size", "0", "64", "16"]) == 2
    assert "crop size (0, 64, 16) larger than the resampled volume" in capsys.readouterr().err
    assert main([*base, "--dice-floor", "0.3"]) == 2
    assert "--dice-floor: needs a labelled target validation folder" in capsys.readouterr().err
    shutil.rmtree(folder / "imagesUnlabelledTr")
    assert main(base) == 2
    assert "missing target pool" in capsys.readouterr().err
    assert not (dirs["nnUNet_raw"] / "Dataset420_XMCrop").exists()


def test_crossmoda_end_to_end_with_stock_nnunet(crossmodal, tmp_path, monkeypatch, capsys):
    """crop -> 2 translation runs -> GBA -> nnU-Net (one smoke fold) -> 1 self-training iteration -> test prediction
    pasted back into the original grid and evaluated."""
    folder, dirs = crossmodal
    for variable, value in {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}.items():
        monkeypatch.setenv(variable, value)
    monkeypatch.delenv("nnUNet_n_proc_DA", raising=False)  # the CLI gives CPU trainings 0 workers itself
    assert main(["crossmoda", "-d", "400", "-o", "430", "-tr", "nnUNetTrainer_smoke", "-f", "0", "--size", "0", "24",
                 "24", "--spacing", "1", "1", "1", *TINY, "--runs", "2", "--augment", "gba", "--singan-iters", "2",
                 "--singan-min-size", "10", "--scales", "2", "--iterations", "1", "-device", "cpu", "-np", "1",
                 "--workdir", str(tmp_path / "w")]) == 0
    report = (tmp_path / "w" / "crossmoda_report.md").read_text()
    assert "Mean Dice" in report and "Dataset432_XMPseudoGBA" in report
    names = {p.name for p in dirs["nnUNet_raw"].iterdir()}
    assert {"Dataset430_XMCrop", "Dataset431_XMPseudo", "Dataset432_XMPseudoGBA", "Dataset433_XMPseudoGBAST1"} <= names
    gba = Manifest.load(dirs["nnUNet_raw"] / "Dataset432_XMPseudoGBA")
    assert {r.source_case.rsplit("_run", 1)[1] for r in gba.cases.values() if r.kind == "synthetic"} == {"0", "1"}
    references = sorted((folder / "labelsTs").glob("*.nii.gz"))
    assert len(references) == 2
    for reference in references:
        pasted, geometry = read_image(tmp_path / "w" / "test" / "predictions" / reference.name)
        original, original_geometry = read_image(reference)
        assert pasted.shape == original.shape and geometry == original_geometry
    state = json.loads((tmp_path / "w" / "crossmoda_state.json").read_text())
    assert state["steps"]["evaluate"]["evaluated"] and 0 <= state["steps"]["evaluate"]["test_dice"] <= 1
    shutil.rmtree(dirs["nnUNet_results"])
