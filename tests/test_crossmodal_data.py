"""Cross-modal data: the seeded T1/T2 phantom (same subject in both modalities, inverted tissue ordering, two centres
per modality), its raw dataset layout and CLI command, and the real-anatomy builder when its anatomy is installed."""
from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from nnunet_gen.cli import main
from nnunet_gen.convert.crossmodal_phantom import (CSF, GM, TARGET_FOLDER, WM, crossmodal_case, crossmodal_subject,
                                                   thick_slices, write_crossmodal_phantom)
from nnunet_gen.io.raw_dataset import RawDataset

SEEDS = (0, 1, 2)
SMALL = (16, 24, 24)


def _tissue_means(image: np.ndarray, seed: int) -> list[float]:
    """Mean of ``image`` over eroded CSF, GM, WM (tumour excluded) and the tumour of subject ``seed``."""
    subject = crossmodal_subject(seed, image.shape)
    masks = [ndimage.binary_erosion(subject.tissue == t) & ~subject.tumour for t in (CSF, GM, WM)]
    return [float(image[m].mean()) for m in (*masks, subject.tumour)]


def test_a_seed_is_one_subject_in_both_modalities_and_centres():
    t1, label = crossmodal_case(5, "T1", "A")
    assert t1.shape == (32, 48, 48) and t1.dtype == np.float32 and label.dtype == np.uint8 and label.sum() > 50
    again, label_again = crossmodal_case(5, "T1", "A")
    np.testing.assert_array_equal(again, t1)
    np.testing.assert_array_equal(label_again, label)
    for modality, centre in (("T1", "B"), ("T2", "A"), ("T2", "B")):
        image, other = crossmodal_case(5, modality, centre)
        np.testing.assert_array_equal(other, label)
        assert not np.allclose(image, t1)
    assert not np.array_equal(crossmodal_case(6, "T1", "A")[1], label)
    with pytest.raises(ValueError, match="T1|T2"):
        crossmodal_case(5, "FLAIR", "A")


@pytest.mark.parametrize("centre", ["A", "B"])
def test_tissue_ordering_is_inverted_and_the_tumour_changes_appearance(centre):
    for seed in SEEDS:
        (csf1, gm1, wm1, tumour1), (csf2, gm2, wm2, tumour2) = (
            _tissue_means(crossmodal_case(seed, m, centre)[0], seed) for m in ("T1", "T2"))
        assert csf1 < 0.5 * gm1 < 0.5 * 0.9 * wm1 and tumour1 > 1.3 * wm1  # T1: WM > GM > CSF, tumour enhancing
        assert csf2 > 1.15 * gm2 > 1.15 * 1.2 * wm2 and wm2 < tumour2 < csf2  # T2: inverted, tumour intermediate
        core = ndimage.binary_erosion(crossmodal_case(seed, "T1", centre)[1])
        cv = [np.std(image[core]) / np.mean(image[core]) for image in (crossmodal_case(seed, m, centre)[0]
                                                                        for m in ("T1", "T2"))]
        assert cv[1] > 1.5 * cv[0]  # T2 tumours are heterogeneous


def test_centres_differ_in_intensity_and_through_plane_resolution():
    def z_sharpness(image: np.ndarray) -> float:  # gradient energy along z relative to along x (blur lowers it)
        return float((np.diff(image, axis=0) ** 2).mean() / (np.diff(image, axis=2) ** 2).mean())

    for modality in ("T1", "T2"):
        a, b = (crossmodal_case(3, modality, centre)[0] for centre in "AB")
        wm_a, wm_b = _tissue_means(a, 3)[2], _tissue_means(b, 3)[2]
        assert abs(wm_b / wm_a - 1) > 0.15, (modality, wm_a, wm_b)
        assert z_sharpness(b) < 0.8 * z_sharpness(a), modality
    ramp, impulse = np.arange(9.0)[:, None], (np.arange(9) == 4)[:, None].astype(float)
    np.testing.assert_array_equal(thick_slices(ramp, 1), ramp)
    np.testing.assert_allclose(thick_slices(ramp, 3)[1:-1], ramp[1:-1])  # the grid is kept, linear trends too
    assert (thick_slices(impulse, 3) > 0).sum() >= 3 and thick_slices(impulse, 3).max() < 0.5  # a slice is smeared


def test_phantom_dataset_layout(nnunet_dirs):
    folder = write_crossmodal_phantom(990, "CrossModal", n_source=3, n_target=4, n_test=2, seed=1, shape=SMALL)
    raw = RawDataset(folder)
    raw.validate()
    source = ["sourceA_000", "sourceA_001", "sourceA_002"]
    assert raw.case_ids() == raw.case_ids("imagesTr") == raw.case_ids(TARGET_FOLDER) == source
    assert raw.case_ids("imagesUnlabelledTr") == ["targetA_003", "targetA_005", "targetB_004", "targetB_006"]
    assert raw.case_ids("labelsTs") == raw.case_ids("imagesTs") == ["testA_007", "testB_008"]
    dataset_json = json.loads((folder / "dataset.json").read_text())
    assert dataset_json["channel_names"] == {"0": "T1"} and dataset_json["numTraining"] == 3
    assert dataset_json["unlabelled_modality"] == "T2" and dataset_json["paired_target_folder"] == TARGET_FOLDER
    manifest = raw.manifest()
    assert manifest.of_kind("real") == source and len(manifest.cases) == 3
    assert sorted(p.name for p in folder.iterdir() if p.is_dir()) == sorted(
        ["imagesTr", "labelsTr", TARGET_FOLDER, "imagesUnlabelledTr", "imagesTs", "labelsTs"])  # no other labels
    subject = 1 * 100003 + 1
    t1, t2 = raw.read_case("sourceA_001"), raw.read_case("sourceA_001", TARGET_FOLDER, None)
    np.testing.assert_array_equal(t1.images[0], crossmodal_case(subject, "T1", "A", SMALL)[0])
    np.testing.assert_array_equal(t2.images[0], crossmodal_case(subject, "T2", "A", SMALL)[0])
    np.testing.assert_array_equal(t1.label, crossmodal_case(subject, "T2", "A", SMALL)[1])
    test = raw.read_case("testB_008", "imagesTs", "labelsTs")
    np.testing.assert_array_equal(test.images[0], crossmodal_case(1 * 100003 + 8, "T2", "B", SMALL)[0])


def test_cli_writes_and_refuses_to_overwrite(nnunet_dirs, capsys):
    argv = ["phantom-crossmodal", "-d", "991", "--name", "CM", "--source", "2", "--target", "2", "--test", "1",
            "--seed", "3", "--shape", *map(str, SMALL)]
    assert main(argv) == 0
    folder = nnunet_dirs["nnUNet_raw"] / "Dataset991_CM"
    before = (folder / "imagesTr" / "sourceA_000_0000.nii.gz").read_bytes()
    capsys.readouterr()
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("nnunet-gen: error: Dataset991_CM: ")
    assert "--overwrite" in errors[0]
    assert main([*argv, "--overwrite"]) == 0
    assert (folder / "imagesTr" / "sourceA_000_0000.nii.gz").read_bytes() == before
    assert sorted(p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()) == ["Dataset991_CM"]


def test_real_anatomy_builder(nnunet_dirs):
    crossmodal = pytest.importorskip("benchmarks.anatomy.crossmodal")
    if not crossmodal.VOLUMES.is_dir():
        pytest.skip("real anatomy not installed (bash benchmarks/anatomy/setup.sh)")
    subjects = crossmodal.load_subjects(("icbm2009a", "robex", "itk"))
    for name, subject in subjects.items():
        maps = crossmodal.tissue_maps(subject["T1"])
        means = [[float(subject[m].image[(p > 0.7) & subject["T1"].brain].mean()) for p in maps] for m in ("T1", "T2")]
        assert means[0][0] < means[0][1] < means[0][2] and means[1][0] > means[1][1] > means[1][2], (name, means)
    crop = (24, 24, 24)
    t1, label = crossmodal.crossmodal_case(subjects["icbm2009a"], 11, "T1", "A", crop)
    t2, label_t2 = crossmodal.crossmodal_case(subjects["icbm2009a"], 11, "T2", "B", crop)
    np.testing.assert_array_equal(label, label_t2)
    lesion = label > 0
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion) & (t1 > 0)
    assert t1[lesion].mean() > 1.15 * t1[ring].mean()  # enhancing in T1
    folder = crossmodal.build_dataset(subjects, 992, "AnatomyCrossModal", seed=2, counts=crossmodal.Counts(2, 2, 2),
                                      source=("icbm2009a",), target=("robex",), test=("itk",), crop=crop)
    raw = RawDataset(folder)
    raw.validate()
    assert raw.case_ids() == raw.case_ids(TARGET_FOLDER) == ["sourceA_icbm2009a_00", "sourceA_icbm2009a_01"]
    assert raw.case_ids("imagesUnlabelledTr") == ["targetA_robex_00", "targetB_robex_01"]
    assert raw.case_ids("labelsTs") == ["testA_itk_00", "testB_itk_01"]


@pytest.mark.parametrize("seed", (0, 5))
def test_two_contrast_anatomy_case_on_a_stand_in_brain(seed):
    from test_anatomy_shift import stand_in, stand_in_maps

    from benchmarks.anatomy.crossmodal import t2_anatomy, two_contrast_case
    anatomy = stand_in("a", 0)
    subject = {"T1": anatomy, "T2": t2_anatomy(anatomy, stand_in_maps(anatomy))}
    images, label = two_contrast_case(subject, seed, SMALL)
    assert images.shape == (2, *SMALL) and images.dtype == np.float32 and label.shape == SMALL
    lesion = label > 0
    ring = ndimage.binary_dilation(lesion, iterations=3) & ~ndimage.binary_dilation(lesion) & (images[0] > 0)
    assert lesion.sum() >= 20 and ring.any()
    t1, t2 = images
    assert t1[lesion].mean() > 1.15 * t1[ring].mean()  # enhancing in T1
    assert 55.0 < t2[lesion].mean() < 90.0  # T2: intermediate, between grey matter (60) and CSF (100)
    assert t2[lesion].std() / t2[lesion].mean() > t1[lesion].std() / t1[lesion].mean()  # heterogeneous in T2
    np.testing.assert_array_equal(two_contrast_case(subject, seed, SMALL)[1], label)
