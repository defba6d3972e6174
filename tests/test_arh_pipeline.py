"""ARHNet in the nnU-Net workflow: `arhnet train/eval`, `render arh` (manifest, re-rendering, donor-aware grouped
splits), bad input, and the stock `nnUNetv2_plan_and_preprocess` + `nnUNetv2_train -tr nnUNetTrainerARH_smoke`."""
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
from nnunet_gen.errors import DataError
from nnunet_gen.generators.arh import (
    holdout_split,
    lesion_case_groups,
    make_config,
    open_checkpoint,
    train_on_dataset,
    validation_curve_path,
)
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.images import Geometry
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.splits import check_no_leak, grouped_splits, write_splits
from nnunet_gen.io.writer import DatasetWriter
from nnunet_gen.render.arh import render_arh_dataset
from synth.arhnet import composite_from_dict

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PATCH = (16, 16, 16)
TINY = {"iterations": 2, "batch_size": 2, "base_channels": 4, "depth": 2, "discriminator_channels": 4,
        "discriminator_depth": 2}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """Phantom source (6 labelled cases, raw intensities ~0-150) and a tiny ARHNet trained on it."""
    root = tmp_path_factory.mktemp("arh")
    with pytest.MonkeyPatch.context() as patch:
        for name, folder in (("nnUNet_raw", "raw"), ("nnUNet_preprocessed", "pre"), ("nnUNet_results", "res")):
            patch.setenv(name, str(root / folder))
        write_phantom_dataset(801, "ArhSrc", cases_a=6, cases_b=0, shape=(16, 24, 24))
        checkpoint = root / "arhnet.safetensors"
        train_on_dataset(801, checkpoint, make_config("arhnet", PATCH, **TINY), progress=False)
        yield root, checkpoint


def test_render_arh_manifest_rerenders_and_splits_respect_donors(workspace):
    root, checkpoint = workspace
    harmonized = render_arh_dataset(801, 802, "ArhSrcARH", checkpoint, num=9, seed=3)
    plain = render_arh_dataset(801, 803, "ArhSrcCopyPaste", None, num=9, seed=3)
    src, arh_raw, plain_raw = (RawDataset.find(i) for i in (801, 802, 803))
    assert len(harmonized.of_kind("synthetic")) == 9 and len(harmonized.of_kind("real")) == 6
    assert arh_raw.dataset_json["numTraining"] == 15 and not harmonized.skipped
    for case_id in harmonized.of_kind("synthetic"):
        record = harmonized.cases[case_id]
        params = record.params
        assert record.generator == "arhnet" and record.checkpoint_sha256 == sha256_of_file(checkpoint)
        assert record.group == params["recipient_case"] == record.source_case != params["donor_case"]
        assert params["linked_groups"] == [params["donor_case"]] and params["harmonizer"]["method"] == "arhnet"
        plain_id = case_id.replace("_arh", "_cp")
        assert plain.cases[plain_id].params["composite"] == params["composite"]  # harmonising changes no sampling
        # the recorded composite re-renders the plain composite exactly from the two source cases
        donor, recipient = src.read_case(params["donor_case"]), src.read_case(params["recipient_case"])
        result = composite_from_dict(params["composite"])(donor.images[0], donor.label, recipient.images[0],
                                                          recipient.label)
        plain_case, arh_case = plain_raw.read_case(plain_id), arh_raw.read_case(case_id)
        np.testing.assert_allclose(plain_case.images[0], result.image, atol=1e-4)
        assert np.array_equal(plain_case.label, result.label) and np.array_equal(arh_case.label, result.label)
        assert int(result.pasted_mask.sum()) == params["pasted_voxels"]
        outside = ~result.pasted_mask  # intensities not in [0, 1]: scaled for ARHNet and mapped back
        np.testing.assert_allclose(arh_case.images[0][outside], result.image[outside], atol=1e-3)
        assert np.isfinite(arh_case.images).all()
        assert not np.allclose(arh_case.images[0][result.pasted_mask], result.image[result.pasted_mask])
    splits = grouped_splits(harmonized)
    check_no_leak(harmonized, splits)
    for fold in splits:
        val = set(fold["val"])
        for case_id in fold["train"]:
            record = harmonized.cases[case_id]
            assert record.source_case not in val and record.params.get("donor_case") not in val
    leaky = [{"train": sorted(set(splits[0]["train"]) | {c for c in harmonized.of_kind("synthetic")}),
              "val": splits[0]["val"]}]
    with pytest.raises(DataError, match="cases of validation patients in training"):
        check_no_leak(harmonized, leaky)


def test_cli_train_eval_table_figure_and_heldout_guard(workspace, capsys):
    root, checkpoint = workspace
    out = root / "eval"
    assert main(["arhnet", "eval", "-d", "801", "--checkpoints", str(checkpoint), "-o", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| composite |" in printed and "| hm |" in printed and "| arhnet |" in printed
    table = json.loads((out / "harmonization_table.json").read_text())
    assert list(table["table"]) == ["composite", "hm", "arhnet"] and table["patch_size"] == list(PATCH)
    _, held_out = holdout_split(lesion_case_groups(RawDataset.find(801), [1]), 0.2, 0)
    assert table["held_out_cases"] == held_out
    assert not set(held_out) & set(json.loads(Path(f"{checkpoint}.json").read_text())["train_cases"])
    assert (out / "harmonization_table.csv").read_text().splitlines()[0] == "method,MAE,fMAE,PSNR,fPSNR"
    assert (out / "harmonization_fig3.png").stat().st_size > 1000
    assert all(np.isfinite(v) for row in table["table"].values() for v in row.values())
    # evaluation is deterministic
    assert main(["arhnet", "eval", "-d", "801", "--checkpoints", str(checkpoint), "-o", str(root / "eval2")]) == 0
    assert json.loads((root / "eval2" / "harmonization_table.json").read_text())["table"] == table["table"]
    # a checkpoint trained on every case cannot be evaluated on this dataset's held-out cases
    all_cases = root / "all.safetensors"
    assert main(["arhnet", "train", "-d", "801", "-o", str(all_cases), "--method", "unet", "--holdout", "0",
                 "--iterations", "1", "--patch-size", *map(str, PATCH), "--depth", "2", "--base-channels", "4"]) == 0
    capsys.readouterr()
    assert main(["arhnet", "eval", "-d", "801", "--checkpoints", str(all_cases), "-o", str(root / "e3")]) == 2
    error = capsys.readouterr().err.strip()
    assert "was trained on evaluated case(s)" in error and len(error.splitlines()) == 1


def test_cli_train_preset_prints_validation_curve_and_writes_png(workspace, capsys):
    root, _ = workspace
    output = root / "selected.safetensors"
    assert main(["arhnet", "train", "-d", "801", "-o", str(output), "--preset", "cpu", "--iterations", "3",
                 "--val-interval", "1", "--patch-size", *map(str, PATCH), "--depth", "2", "--base-channels", "4",
                 "--batch-size", "2"]) == 0
    printed = capsys.readouterr().out
    assert "validation curve (iteration: fPSNR dB): 1: " in printed and "kept iteration" in printed
    curve_png = root / "selected_validation.png"
    assert validation_curve_path(output) == curve_png and curve_png.stat().st_size > 1000
    harmonizer = open_checkpoint(output)
    assert harmonizer.config.lr_schedule == "cosine" and harmonizer.config.patch_size == PATCH
    assert [p["iteration"] for p in harmonizer.validation["curve"]] == [1, 2, 3]
    provenance = json.loads(Path(f"{output}.json").read_text())
    validation, train = set(provenance["validation_cases"]), set(provenance["train_cases"])
    assert validation and validation < train and not validation & set(provenance["held_out_cases"])
    assert main(["arhnet", "train", "-d", "801", "-o", str(root / "z.safetensors"), "--val-fraction", "0.95",
                 "--iterations", "1", "--patch-size", *map(str, PATCH), "--depth", "2"]) == 2
    assert "--val-fraction" in capsys.readouterr().err and not (root / "z.safetensors").exists()


def _write_dataset(dataset_id: int, name: str, cases: dict[str, tuple[np.ndarray, np.ndarray]]) -> None:
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    with DatasetWriter(dataset_id, name, {0: "MR"}, {"background": 0, "lesion": 1}, {"command": "test"}) as writer:
        for case_id, (image, label) in cases.items():
            writer.write_case(case_id, image[None], label, geometry)
        writer.finalize(Manifest.for_real_cases(cases))


def test_bad_input_is_refused_in_one_line_and_leaves_nothing(workspace, capsys):
    root, checkpoint = workspace
    raw_root = root / "raw"
    rng = np.random.default_rng(0)
    image = (1000.0 + 100.0 * rng.random((20, 20, 20))).astype(np.float32)
    empty = np.zeros((20, 20, 20), dtype=np.uint8)
    _write_dataset(811, "Empty", {"e0": (image, empty), "e1": (image, empty)})
    with pytest.raises(DataError, match="no real case has voxels with labels"):
        render_arh_dataset(811, 812, "EmptyARH", checkpoint, num=2)
    assert not list(raw_root.glob("*812*")) and not list(raw_root.glob(".*812*"))
    with pytest.raises(DataError, match="nothing to train or evaluate on"):
        train_on_dataset(811, root / "x.safetensors", make_config("arhnet", PATCH, **TINY), progress=False)

    # lesions touching the border and larger than the 16^3 patch; one empty case (not a donor, still a recipient)
    big = np.zeros((20, 20, 20), dtype=np.uint8)
    big[0:18, 0:5, 0:5] = 1
    small = np.zeros((20, 20, 20), dtype=np.uint8)
    small[8:11, 8:11, 8:11] = 1
    cases = {"b0": (image, big), "b1": (image * 1.1, small), "b2": (image * 0.9, empty)}
    _write_dataset(813, "Border", cases)
    manifest = render_arh_dataset(813, 814, "BorderARH", checkpoint, num=6)
    donors = {manifest.cases[c].params["donor_case"] for c in manifest.of_kind("synthetic")}
    assert "b2" not in donors and manifest.of_kind("synthetic")
    for case_id in manifest.of_kind("synthetic"):
        assert np.isfinite(RawDataset.find(814).read_case(case_id).images).all()
    skipped_or_rendered = set(manifest.skipped) | {manifest.cases[c].source_case for c in manifest.of_kind("synthetic")}
    assert skipped_or_rendered == {"b0", "b1", "b2"}

    # checkpoints of another patch size, foreign files, missing files: one-line errors, no dataset written
    with pytest.raises(DataError, match="trained for patch size"):
        open_checkpoint(checkpoint, patch_size=(32, 32, 32))
    foreign = root / "foreign.safetensors"
    foreign.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    for argv in (["render", "arh", "-d", "801", "-o", "815", "--checkpoint", str(foreign)],
                 ["render", "arh", "-d", "801", "-o", "815", "--checkpoint", str(root / "missing.safetensors")],
                 ["render", "arh", "-d", "801", "-o", "815", "--no-harmonize", "--num", "0"],
                 ["arhnet", "eval", "-d", "801", "-o", str(root / "e4"), "--checkpoints", str(checkpoint),
                  "--patch-size", "32", "32", "32"],
                 ["arhnet", "train", "-d", "801", "-o", str(root / "y.safetensors"), "--patch-size", "20", "20", "20"]):
        assert main(argv) == 2, argv
        error = capsys.readouterr().err.strip()
        assert error.startswith("nnunet-gen: error:") and len(error.splitlines()) == 1, error
    assert not list(raw_root.glob("*815*")) and not list(raw_root.glob(".*815*"))
    assert not (root / "y.safetensors").exists()


def _run(args, env):
    result = subprocess.run([str(a) for a in args], env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"{args} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def test_stock_plan_and_preprocess_accepts_render_and_arh_trainer_trains(workspace):
    """The rendered dataset passes nnU-Net's own integrity check; nnUNetTrainerARH_smoke trains on grouped splits."""
    root, checkpoint = workspace
    if not (root / "raw" / "Dataset802_ArhSrcARH").is_dir():
        render_arh_dataset(801, 802, "ArhSrcARH", checkpoint, num=9, seed=3)
    env = {**os.environ, "nnUNet_compile": "f", "nnUNet_def_n_proc": "1", "nnUNet_extTrainer": str(REPO / "trainers")}
    _run([BIN / "nnUNetv2_plan_and_preprocess", "-d", "802", "-c", "3d_fullres", "-np", "1",
          "--verify_dataset_integrity"], env)
    manifest = Manifest.load(root / "raw" / "Dataset802_ArhSrcARH")
    write_splits(root / "pre" / "Dataset802_ArhSrcARH", grouped_splits(manifest))
    log = _run([BIN / "nnUNetv2_train", "802", "3d_fullres", "0", "-tr", "nnUNetTrainerARH_smoke", "-device", "cpu"],
               {**env, "nnUNet_n_proc_DA": "0"})
    fold = root / "res" / "Dataset802_ArhSrcARH" / "nnUNetTrainerARH_smoke__nnUNetPlans__3d_fullres" / "fold_0"
    assert (fold / "checkpoint_final.pth").is_file(), log[-2000:]
    validated = sorted(p.name[:-len(".nii.gz")] for p in (fold / "validation").glob("*.nii.gz"))
    assert validated and all(manifest.cases[c].kind == "real" for c in validated)
    split = json.loads((root / "pre" / "Dataset802_ArhSrcARH" / "splits_final.json").read_text())[0]
    for case_id in split["train"]:
        params = manifest.cases[case_id].params
        assert manifest.cases[case_id].source_case not in validated and params.get("donor_case") not in validated
