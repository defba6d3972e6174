"""Brain-centre crop and paste-back (GBA paper 4.2.2): geometry exact, labels back where they were, bad sizes refused."""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_gen.cli import main
from nnunet_gen.convert.crop import (CROPS_FILE, brain_centre, crop_case, crop_dataset, crop_records, paste_back,
                                     paste_back_folder)
from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.errors import DataError
from nnunet_gen.io.images import Geometry, read_image

#: An oblique grid (rotated about z), anisotropic spacing, a non-zero origin: what real scans have.
ANGLE = 0.3
OBLIQUE = Geometry((0.8, 0.9, 2.0), (-40.0, 12.5, 7.0),
                   (np.cos(ANGLE), -np.sin(ANGLE), 0.0, np.sin(ANGLE), np.cos(ANGLE), 0.0, 0.0, 0.0, 1.0))


def _volume(shape=(12, 40, 44)) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    image = np.zeros(shape, np.float32)
    image[3:9, 10:31, 12:35] = rng.uniform(90, 110, (6, 21, 23))  # the "brain", off-centre, in an empty background
    label = np.zeros(shape, np.uint8)
    label[4:8, 15:20, 18:25] = 1
    return image, label


def _physical(geometry: Geometry, index_zyx) -> np.ndarray:
    image = geometry.apply_to(sitk.Image(4, 4, 4, sitk.sitkUInt8))
    return np.array(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in reversed(index_zyx)]))


def test_brain_centre_is_the_mean_of_bright_voxels():
    volume = np.zeros((10, 20, 20), np.float32)
    volume[2:4, 5:9, 10:16] = 50.0
    assert np.allclose(brain_centre(volume), [2.5, 6.5, 12.5])


def test_crop_is_centred_on_the_brain_and_keeps_physical_positions():
    image, label = _volume()
    cropped, cropped_label, geometry, record = crop_case(image[None], label, OBLIQUE, None, (0, 16, 16), "case x")
    assert cropped.shape == (1, 12, 16, 16) and record.size == (12, 16, 16)
    assert record.start == (0, 12, 15)  # brain box centre (y 20, x 23) minus half the size
    # the cropped voxel (0, 0, 0) is the original voxel `start` in physical space
    assert np.allclose(_physical(geometry, (0, 0, 0)), _physical(OBLIQUE, record.start))
    assert np.array_equal(cropped[0], image[0:12, 12:28, 15:31])
    assert np.array_equal(cropped_label, label[0:12, 12:28, 15:31])


def test_paste_back_without_resampling_is_exact():
    image, label = _volume()
    _, cropped_label, _, record = crop_case(image[None], label, OBLIQUE, None, (0, 24, 24), "case x")
    pasted = paste_back(cropped_label, record)
    assert pasted.shape == label.shape and np.array_equal(pasted, label)


def test_paste_back_after_resampling_restores_the_original_grid():
    image, label = _volume()
    # 2 mm slices resampled to 1 mm: every original voxel centre is a resampled voxel centre, so nearest-neighbour
    # there and back is exact
    spacing = (1.0, 0.9 / 2, 0.8 / 2)
    cropped, cropped_label, geometry, record = crop_case(image[None], label, OBLIQUE, spacing, (0, 48, 48), "x")
    assert cropped.shape[1:] == (24, 48, 48) and np.allclose(geometry.spacing_zyx, spacing)
    assert record.original_geometry == OBLIQUE and record.original_shape == label.shape
    assert np.array_equal(paste_back(cropped_label, record), label)


def test_paste_back_refuses_a_prediction_of_another_size():
    image, label = _volume()
    _, cropped_label, _, record = crop_case(image[None], label, OBLIQUE, None, (0, 16, 16), "x")
    with pytest.raises(DataError, match="crop size"):
        paste_back(cropped_label[:, :-1], record)


def test_crop_larger_than_the_volume_is_refused():
    image, label = _volume()
    with pytest.raises(DataError, match=r"case x: crop size \(0, 64, 16\) larger than the resampled volume"):
        crop_case(image[None], label, OBLIQUE, None, (0, 64, 16), "case x")


def test_crop_dataset_records_every_folder_and_pastes_back(nnunet_dirs, tmp_path):
    write_phantom_dataset(301, "Ph", 5, 2, shape=(16, 32, 32), spacing_zyx=(2.0, 1.0, 1.0))
    folder = crop_dataset(301, 302, "PhCrop", (0, 24, 24), (1.0, 1.0, 1.0))
    assert json.loads((folder / CROPS_FILE).read_text())["source"] == "Dataset301_Ph"
    assert sorted(crop_records(302, "imagesTs")) == ["phantomB_000", "phantomB_001"]
    image, geometry = read_image(folder / "imagesTs" / "phantomB_000_0000.nii.gz")
    assert image.shape == (32, 24, 24) and np.allclose(geometry.spacing, (1.0, 1.0, 1.0))
    assert (folder / "nnunet_gen_manifest.json").is_file() and len(list((folder / "labelsTr").iterdir())) == 5
    # "predictions" = the cropped labels: pasted back they are the original labels (the tumour lies in the crop)
    out = tmp_path / "pasted"
    paste_back_folder(302, "imagesTs", folder / "labelsTs", out)
    for case in ("phantomB_000", "phantomB_001"):
        original, original_geometry = read_image(nnunet_dirs["nnUNet_raw"] / "Dataset301_Ph" / "labelsTs" /
                                                 f"{case}.nii.gz")
        pasted, pasted_geometry = read_image(out / f"{case}.nii.gz")
        assert pasted_geometry == original_geometry and np.array_equal(pasted, original)


def test_crop_cli_refuses_bad_sizes_and_overwriting(nnunet_dirs, capsys):
    write_phantom_dataset(303, "Ph", 5, 1, shape=(8, 24, 24))
    assert main(["crop", "-d", "303", "-o", "304", "--size", "0", "30", "16"]) == 2
    assert "crop size (0, 30, 16) larger than the resampled volume (8, 24, 24)" in capsys.readouterr().err
    assert not (nnunet_dirs["nnUNet_raw"] / "Dataset304_PhCrop").exists()
    assert main(["crop", "-d", "303", "-o", "304", "--size", "0", "16", "16"]) == 0
    assert main(["crop", "-d", "303", "-o", "304", "--size", "0", "16", "16"]) == 2
    assert "already exists" in capsys.readouterr().err


def test_the_paired_target_folder_is_cut_with_the_boxes_of_its_labelled_cases(nnunet_dirs):
    from nnunet_gen.convert.crossmodal_phantom import write_crossmodal_phantom
    write_crossmodal_phantom(305, "XM", 2, 2, 1, shape=(12, 40, 40))
    crop_dataset(305, 306, "XMCrop", (0, 24, 24))
    source, paired = crop_records(306, "imagesTr"), crop_records(306, "imagesTrTarget")
    assert sorted(source) == sorted(paired) and all(source[c].start == paired[c].start for c in source)
