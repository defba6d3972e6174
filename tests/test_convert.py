"""Conversion commands: good inputs convert exactly; each bad input gives a one-line error, exit 2, no output."""
import re

import numpy as np
import pytest

from nnunet_gen.cli import main
from nnunet_gen.convert.folders import UNLABELLED_FOLDER
from nnunet_gen.convert.phantom import phantom_case
from nnunet_gen.io.images import Geometry, read_image, write_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset

GEOMETRY = Geometry((0.5, 0.5, 2.0), (10.0, -4.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _folders(tmp_path, n=3, channels=("T1", "T2"), ending=".nii.gz"):
    images, labels = tmp_path / "images", tmp_path / "labels"
    images.mkdir()
    labels.mkdir()
    for i in range(n):
        image, label = phantom_case(i, "A", (8, 12, 12), tumour_radius=(2.0, 3.0))
        for k, channel in enumerate(channels):
            write_image(image * (k + 1), GEOMETRY, images / f"case{i}_{channel}{ending}")
        write_image(label, GEOMETRY, labels / f"case{i}{ending}")
    return images, labels


def _convert(images, labels, *extra):
    return main(["convert", "folders", "--images", str(images), "--labels", str(labels), "-d", "7",
                 "--name", "Conv", "--channels", "T1", "T2", *extra])


def test_generic_conversion_keeps_geometry_and_channels(tmp_path, nnunet_dirs):
    images, labels = _folders(tmp_path, ending=".nrrd")
    assert _convert(images, labels) == 0
    ds = RawDataset.find(7)
    ds.validate()
    assert ds.dataset_json["channel_names"] == {"0": "T1", "1": "T2"} and ds.case_ids() == ["case0", "case1", "case2"]
    case = ds.read_case("case1")
    original, _ = read_image(images / "case1_T2.nrrd")
    np.testing.assert_array_equal(case.images[1], original)
    assert case.geometry.matches(GEOMETRY, 1e-6)
    assert Manifest.load(ds.folder).of_kind("real") == ["case0", "case1", "case2"]


def _break(kind, images, labels):
    if kind == "geometry":
        label, _ = read_image(labels / "case1.nii.gz")
        write_image(label, Geometry((0.6, 0.5, 2.0), GEOMETRY.origin, GEOMETRY.direction), labels / "case1.nii.gz")
        return "case case1: label spacing"
    if kind == "label values":
        label, _ = read_image(labels / "case2.nii.gz")
        label[0, 0, 0] = 3
        write_image(label, GEOMETRY, labels / "case2.nii.gz")
        return r"case case2: label values \[3\] are not in dataset.json"
    if kind == "missing channel":
        (images / "case1_T2.nii.gz").unlink()
        return r"case case1: missing image file\(s\) for \['case1_T2'\]"
    if kind == "unreadable":
        (images / "case2_T1.nii.gz").write_bytes(b"garbage")
        return "case case2: case2_T1.nii.gz is not gzip-compressed"
    if kind == "nan":
        image, _ = read_image(images / "case1_T1.nii.gz")
        image[2, 3, 4] = np.nan
        (images / "case1_T1.nii.gz").unlink()
        write_image(image, GEOMETRY, images / "case1_T1.mha")  # SimpleITK's NIfTI reader turns NaN into 0
        return "case case1: image contains NaN"
    if kind == "empty label":
        write_image(np.zeros((8, 12, 12), np.uint8), GEOMETRY, labels / "case2.nii.gz")
        return r"case case2: label map is empty"
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["geometry", "label values", "missing channel", "unreadable", "nan", "empty label"])
def test_bad_input_is_refused_cleanly(kind, tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    expected = _break(kind, images, labels)
    assert _convert(images, labels) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # tqdm bars aside
    assert len(errors) == 1 and errors[0].startswith("nnunet-gen: error: "), errors
    assert re.search(expected, errors[0]), errors
    assert list(nnunet_dirs["nnUNet_raw"].iterdir()) == []  # nothing half-written, no staging left


def test_existing_dataset_id_is_refused(tmp_path, nnunet_dirs, capsys):
    images, labels = _folders(tmp_path)
    assert _convert(images, labels) == 0
    before = sorted(p.name for p in (nnunet_dirs["nnUNet_raw"] / "Dataset007_Conv" / "imagesTr").iterdir())
    assert _convert(images, labels) == 2
    assert "Dataset007_Conv: dataset already exists" in capsys.readouterr().err
    assert main(["convert", "folders", "--images", str(images), "--labels", str(labels), "-d", "7",
                 "--name", "Other", "--channels", "T1", "T2"]) == 2
    assert "dataset ID 7 is already used by Dataset007_Conv" in capsys.readouterr().err
    after = sorted(p.name for p in (nnunet_dirs["nnUNet_raw"] / "Dataset007_Conv" / "imagesTr").iterdir())
    assert before == after
    assert _convert(images, labels, "--overwrite") == 0


def test_crossmoda_layout(tmp_path, nnunet_dirs):
    folder = tmp_path / "crossmoda"
    folder.mkdir()
    for i in range(3):
        image, label = phantom_case(i, "A", (8, 12, 12), tumour_radius=(2.0, 3.0))
        label[0, 0, :2] = 2  # a "cochlea"
        write_image(image, GEOMETRY, folder / f"crossmoda2022_ldn_{i}_ceT1.nii.gz")
        write_image(label, GEOMETRY, folder / f"crossmoda2022_ldn_{i}_Label.nii.gz")
    for i in range(2):
        image, _ = phantom_case(10 + i, "B", (8, 12, 12))
        write_image(image, GEOMETRY, folder / f"crossmoda2022_etz_{i + 100}_hrT2.nii.gz")
    assert main(["convert", "crossmoda", "-i", str(folder), "-d", "8"]) == 0
    ds = RawDataset.find(8)
    ds.validate()
    assert ds.case_ids() == [f"crossmoda2022_ldn_{i}" for i in range(3)]
    assert ds.labels == {"background": 0, "vestibular_schwannoma": 1, "cochlea": 2}
    assert ds.case_ids(UNLABELLED_FOLDER) == ["crossmoda2022_etz_100", "crossmoda2022_etz_101"]
    assert ds.read_case("crossmoda2022_etz_101", UNLABELLED_FOLDER, None).images.shape == (1, 8, 12, 12)
