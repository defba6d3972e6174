"""Bad input through the CLI, one parametrised test per defect class a hostile probe found (issue 12, section 2).

Every refusal must be one line ``nnunet-gen: error: <where>: <problem>``, exit code 2, and leave nothing behind
(no dataset, no ``.partial`` staging folder, no partial report).
"""
from __future__ import annotations

import gzip
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_gen.cli import build_parser, main
from nnunet_gen.convert.phantom import phantom_case, write_phantom_dataset
from nnunet_gen.io.images import Geometry, read_image, write_image

GEOMETRY = Geometry.isotropic(1.0)
SHAPE = (8, 12, 12)
REPO = Path(__file__).resolve().parent.parent


def _folders(root: Path, n: int = 3) -> tuple[Path, Path]:
    images, labels = root / "images", root / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(n):
        image, label = phantom_case(i, "A", SHAPE, tumour_radius=(2.0, 3.0))
        write_image(image, GEOMETRY, images / f"case{i}.nii.gz")
        write_image(label, GEOMETRY, labels / f"case{i}.nii.gz")
    return images, labels


def _convert(images: Path, labels: Path, *extra: str) -> int:
    return main(["convert", "folders", "--images", str(images), "--labels", str(labels), "-d", "7", "--name", "Bad",
                 *extra])


def _one_error_line(capsys) -> str:
    lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # tqdm bars aside
    assert len(lines) == 1 and lines[0].startswith("nnunet-gen: error: "), lines
    return lines[0]


def _nothing_published(raw: Path) -> None:
    assert list(raw.iterdir()) == [], list(raw.iterdir())


def _nifti_with_values(path: Path, values: np.ndarray) -> None:
    """A float32 NIfTI written by nibabel-free means: SimpleITK keeps NaN/inf in the file (its reader drops them)."""
    image = sitk.GetImageFromArray(values.astype(np.float32))
    sitk.WriteImage(image, str(path), useCompression=True)


# ---- class 1: a kill between the temporary write and the rename, then the same command again -------------------
KILL_SCRIPT = """
import os, sys
import synth.checkpoint as checkpoint
calls = {"n": 0}
real_replace = os.replace
def replace_then_die(source, target):
    calls["n"] += 1
    if calls["n"] == int(sys.argv[1]):
        os._exit(137)  # like kill -9: no cleanup, the temporary file stays
    real_replace(source, target)
checkpoint.os.replace = replace_then_die
from nnunet_gen.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("command", ["convert", "render"])
@pytest.mark.parametrize("kill_at", [3, 6])
def test_kill_between_write_and_rename_is_never_published(command, kill_at, tmp_path, nnunet_dirs):
    images, labels = _folders(tmp_path, n=4)
    argv = ["convert", "folders", "--images", str(images), "--labels", str(labels), "-d", "7", "--name", "Src"]
    if command == "render":
        assert main(argv) == 0
        argv = ["render", "naive", "-d", "7", "-o", "8"]
    killed = subprocess.run([sys.executable, "-c", KILL_SCRIPT, str(kill_at), *argv], cwd=REPO)
    assert killed.returncode == 137
    staging = [p for p in nnunet_dirs["nnUNet_raw"].iterdir() if p.name.endswith(".partial")]
    assert len(staging) == 1 and any(p.name.startswith(".") for p in staging[0].rglob("*.nii.gz"))
    assert main(argv) == 0  # the same command resumes
    prefix = "Dataset007_" if command == "convert" else "Dataset008_"
    dataset = next(p for p in nnunet_dirs["nnUNet_raw"].iterdir() if p.name.startswith(prefix))
    assert not [p for p in dataset.rglob(".*") if p.is_file()]
    from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity
    verify_dataset_integrity(str(dataset), num_processes=1)
    expected = 4 if command == "convert" else 16
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == expected


# ---- classes 2 and 3: NaN/inf and truncation in the NIfTI file itself ------------------------------------------
@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf])
def test_non_finite_nifti_voxels_are_refused(value, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    image, _ = read_image(images / "case1.nii.gz")
    image[2, 3, 4] = value
    _nifti_with_values(images / "case1.nii.gz", image)
    assert sitk.GetArrayFromImage(sitk.ReadImage(str(images / "case1.nii.gz")))[2, 3, 4] == 0  # what SimpleITK sees
    assert _convert(images, labels) == 2
    assert "case case1: case1.nii.gz contains NaN or infinite values" in _one_error_line(capsys)
    _nothing_published(nnunet_dirs["nnUNet_raw"])


@pytest.mark.parametrize("cut", ["gzip stream", "voxel data"])
def test_truncated_nifti_is_refused(cut, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    path = images / "case2.nii.gz"
    if cut == "gzip stream":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:  # a complete gzip stream holding fewer voxel bytes than the header declares
        raw = gzip.decompress(path.read_bytes())
        path.write_bytes(gzip.compress(raw[: len(raw) - 100]))
    assert _convert(images, labels) == 2
    error = _one_error_line(capsys)
    assert "case case2: case2.nii.gz is truncated" in error
    _nothing_published(nnunet_dirs["nnUNet_raw"])


# ---- class 4: dataset IDs nnU-Net already resolves elsewhere ---------------------------------------------------
@pytest.mark.parametrize("folder", ["nnUNet_preprocessed", "nnUNet_results"])
def test_dataset_id_used_outside_raw_is_refused(folder, tmp_path, nnunet_dirs, capsys):
    (nnunet_dirs[folder] / "Dataset007_Other").mkdir()
    images, labels = _folders(tmp_path)
    assert _convert(images, labels) == 2
    assert "dataset ID 7 is already used by Dataset007_Other" in _one_error_line(capsys)
    _nothing_published(nnunet_dirs["nnUNet_raw"])


# ---- class 5: 4D images, a --groups file that is a list ---------------------------------------------------------
@pytest.mark.parametrize("kind", ["4d", "groups list"])
def test_unsupported_shapes_are_refused_without_staging(kind, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    extra: list[str] = []
    if kind == "4d":
        image = sitk.GetImageFromArray(np.ones((2, *SHAPE), np.float32), isVector=False)
        label = sitk.GetImageFromArray(np.ones((2, *SHAPE), np.uint8), isVector=False)
        sitk.WriteImage(image, str(images / "case0.nii.gz"))
        sitk.WriteImage(label, str(labels / "case0.nii.gz"))
        expected = "case case0: case0.nii.gz is 4D"
    else:
        groups = tmp_path / "groups.json"
        groups.write_text(json.dumps(["case0", "case1"]))
        extra = ["--groups", str(groups)]
        expected = "--groups: expected a JSON object mapping case -> patient"
    assert _convert(images, labels, *extra) == 2
    assert expected in _one_error_line(capsys)
    _nothing_published(nnunet_dirs["nnUNet_raw"])


# ---- class 6: SinGAN checkpoints that are not SinGAN checkpoints -----------------------------------------------
def _not_a_singan(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / "singan.safetensors"
    if kind == "random bytes":
        path.write_bytes(np.random.default_rng(0).bytes(4000))
    elif kind == "json":
        path.write_text('{"generators": []}')
    elif kind == "empty":
        path.write_bytes(b"")
    else:  # "other model": a valid safetensors file of another kind, then truncated
        import torch

        from synth.checkpoint import save_tensors
        save_tensors(path, {"w": torch.zeros(64, 64)}, {"format": "synth.arhnet.harmonizer/1"})
        if kind == "truncated":
            path.write_bytes(path.read_bytes()[:-100])
    return path


@pytest.mark.parametrize("kind", ["random bytes", "json", "empty", "other model", "truncated"])
def test_render_gba_refuses_unusable_singan_files(kind, tmp_path, nnunet_dirs, capsys):
    write_phantom_dataset(5, "Src", cases_a=2, cases_b=0, shape=SHAPE)
    capsys.readouterr()
    singan = _not_a_singan(kind, tmp_path)
    assert main(["render", "gba", "-d", "5", "-o", "6", "--singan", str(singan)]) == 2
    assert f"{singan}: cannot load SinGAN checkpoint" in _one_error_line(capsys)
    assert [p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()] == ["Dataset005_Src"]


# ---- classes 7 and 8: evaluate / rank with mismatched or unreadable predictions --------------------------------
def _evaluation_folders(root: Path) -> tuple[Path, Path]:
    reference, prediction = root / "ref", root / "pred"
    reference.mkdir()
    prediction.mkdir()
    for i in range(2):
        _, label = phantom_case(i, "A", SHAPE)
        write_image(label, GEOMETRY, reference / f"c{i}.nii.gz")
        write_image(label, GEOMETRY, prediction / f"c{i}.nii.gz")
    return reference, prediction


@pytest.mark.parametrize("field", ["origin", "direction", "spacing"])
def test_evaluate_refuses_predictions_in_another_space(field, tmp_path, capsys):
    reference, prediction = _evaluation_folders(tmp_path)
    label, _ = read_image(prediction / "c1.nii.gz")
    moved = {"origin": Geometry(GEOMETRY.spacing, (5.0, 0.0, 0.0), GEOMETRY.direction),
             "direction": Geometry(GEOMETRY.spacing, GEOMETRY.origin, (-1.0, 0, 0, 0, -1.0, 0, 0, 0, 1.0)),
             "spacing": Geometry((1.0, 1.0, 2.0), GEOMETRY.origin, GEOMETRY.direction)}[field]
    write_image(label, moved, prediction / "c1.nii.gz")
    assert main(["evaluate", "-p", str(prediction), "-r", str(reference), "-l", "1", "-o", str(tmp_path / "out"),
                 "-np", "1"]) == 2
    error = _one_error_line(capsys)
    assert "case c1: prediction c1.nii.gz:" in error and f"{field} " in error
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("command", ["evaluate", "rank"])
def test_unreadable_prediction_gives_one_line_and_no_reports(command, tmp_path, capsys):
    reference, prediction = _evaluation_folders(tmp_path)
    good = tmp_path / "good"
    good.mkdir()
    for path in prediction.iterdir():
        good.joinpath(path.name).write_bytes(path.read_bytes())
    (prediction / "c1.nii.gz").write_bytes(b"not an image")
    out = tmp_path / "out"
    if command == "evaluate":
        argv = ["evaluate", "-p", str(prediction)]
    else:  # the good method comes first: its reports must not be written either
        argv = ["rank", "-p", f"good={good}", f"bad={prediction}"]
    assert main([*argv, "-r", str(reference), "-l", "1", "-o", str(out), "-np", "1"]) == 2
    error = _one_error_line(capsys)
    assert "case c1 (prediction): c1.nii.gz is not gzip-compressed" in error
    assert ".cxx" not in error and "sitk::" not in error  # the reason, not SimpleITK's source location
    assert not out.exists()


# ---- class 9: bad --groups files and nnU-Net variables that point to files -------------------------------------
@pytest.mark.parametrize("kind", ["invalid json", "missing file", "unknown case"])
def test_bad_groups_file(kind, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    groups = tmp_path / "groups.json"
    if kind == "invalid json":
        groups.write_text("{case0: p0")
        expected = "is not valid JSON"
    elif kind == "missing file":
        expected = "--groups: file not found"
    else:
        groups.write_text(json.dumps({"case0": "p0", "case9": "p9"}))
        expected = "names case(s) without a label file: ['case9']"
    assert _convert(images, labels, "--groups", str(groups)) == 2
    assert expected in _one_error_line(capsys)
    _nothing_published(nnunet_dirs["nnUNet_raw"])


@pytest.mark.parametrize("variable", ["nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results"])
def test_nnunet_variable_pointing_to_a_file(variable, tmp_path, nnunet_dirs, monkeypatch, capsys):
    images, labels = _folders(tmp_path)
    not_a_folder = tmp_path / "file.txt"
    not_a_folder.write_text("x")
    monkeypatch.setenv(variable, str(not_a_folder))
    assert _convert(images, labels) == 2
    assert f"{variable}: {not_a_folder} is not a folder" in _one_error_line(capsys)


# ---- class 10: labels that nnU-Net would reject later, images without labels -----------------------------------
@pytest.mark.parametrize("kind", ["labels map gap", "labels map without background", "render unknown label",
                                  "image without label"])
def test_label_problems_are_refused_up_front(kind, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    if kind == "labels map gap":
        code, expected = _convert(images, labels, "--labels-map", "background=0", "tumour=2"), \
            "--labels-map: label values must be consecutive 0..1"
    elif kind == "labels map without background":
        code, expected = _convert(images, labels, "--labels-map", "tissue=0", "tumour=1"), \
            "--labels-map: needs background=0"
    elif kind == "render unknown label":
        assert _convert(images, labels) == 0
        capsys.readouterr()
        code = main(["render", "naive", "-d", "7", "-o", "8", "--labels", "5"])
        expected = "--labels: [5] not among the foreground labels [1] of Dataset007_Bad"
    else:
        image, _ = read_image(images / "case0.nii.gz")
        write_image(image, GEOMETRY, images / "case9.nii.gz")
        code, expected = _convert(images, labels), "case case9: image without a label"
    assert code == 2
    assert expected in _one_error_line(capsys)
    assert not [p for p in nnunet_dirs["nnUNet_raw"].iterdir() if p.name != "Dataset007_Bad"]


def test_render_that_skips_every_case_publishes_nothing(tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    assert _convert(images, labels, "--labels-map", "background=0", "tumour=1", "oedema=2") == 0
    capsys.readouterr()
    assert main(["render", "naive", "-d", "7", "-o", "8", "--labels", "2"]) == 2
    assert "no synthetic case rendered: every case was skipped (no voxels with labels [2])" in _one_error_line(capsys)
    assert [p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()] == ["Dataset007_Bad"]


# ---- class 11: messages that say what is wrong -----------------------------------------------------------------
@pytest.mark.parametrize("field", ["origin", "direction"])
def test_geometry_messages_name_the_field_that_differs(field, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    label, _ = read_image(labels / "case1.nii.gz")
    moved = {"origin": Geometry(GEOMETRY.spacing, (0.0, 3.0, 0.0), GEOMETRY.direction),
             "direction": Geometry(GEOMETRY.spacing, GEOMETRY.origin, (0.0, 1.0, 0, 1.0, 0.0, 0, 0, 0, 1.0))}[field]
    write_image(label, moved, labels / "case1.nii.gz")
    assert _convert(images, labels) == 2
    error = _one_error_line(capsys)
    assert f"case case1: label {field}" in error and "does not match the image" in error


def test_unreadable_image_message_gives_the_reason(tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    (images / "case2.nii.gz").write_bytes(b"garbage" * 10)
    assert _convert(images, labels) == 2
    error = _one_error_line(capsys)
    assert "case case2: case2.nii.gz is not gzip-compressed (not a valid .nii.gz)" in error
    (images / "case2.nii.gz").unlink()
    (images / "case2.mha").write_bytes(b"garbage" * 10)
    assert _convert(images, labels) == 2
    error = _one_error_line(capsys)
    assert "case case2: cannot read case2.mha: " in error and ".cxx" not in error


@pytest.mark.parametrize("dataset", ["42", "Nonsense"])
def test_dataset_not_found_message_is_whole(dataset, nnunet_dirs, capsys):
    assert main(["splits", "-d", dataset]) == 2
    error = _one_error_line(capsys)
    if dataset == "42":
        assert error.endswith("no dataset with ID 42 in nnUNet_raw, nnUNet_preprocessed or nnUNet_results "
                              "(check the nnUNet_* environment variables)")
    else:
        assert "expected a dataset ID (e.g. 501) or a folder name (Dataset501_Name)" in error


def test_fold_is_an_integer_or_all(capsys):
    assert build_parser().parse_args(["gen-eval", "-d", "1", "--checkpoint", "g", "-o", "e", "-f", "all", "2"]).f \
        == ["all", 2]
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args(["gen-eval", "-d", "1", "--checkpoint", "g", "-o", "e", "-f", "first"])
    assert exit_info.value.code == 2
    assert "a fold is an integer or 'all', not 'first'" in capsys.readouterr().err
