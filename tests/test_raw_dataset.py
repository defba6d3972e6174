"""Raw dataset I/O: exact geometry, dataset resolution, validation, staged/atomic/resumable writes, manifest."""
import json
import pickle

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from nnunet_gen.convert.phantom import phantom_case, write_phantom_dataset
from nnunet_gen.errors import DataError
from nnunet_gen.io.files import sha256_of_file
from nnunet_gen.io.images import Geometry, read_image, write_image
from nnunet_gen.io.manifest import CaseRecord, Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.writer import DatasetWriter

GEOMETRY = Geometry((0.7, 0.45, 2.5), (-12.5, 30.25, 7.0),
                    tuple(np.round(sitk.VersorTransform((0, 0, 1), 0.3).GetMatrix(), 12)))


def test_image_round_trip_keeps_geometry_exactly(tmp_path):
    array = np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32)
    write_image(array, GEOMETRY, tmp_path / "a.nii.gz")
    back, geometry = read_image(tmp_path / "a.nii.gz")
    np.testing.assert_array_equal(back, array)
    assert geometry.matches(GEOMETRY, tolerance=1e-6)
    assert geometry.spacing_zyx == pytest.approx((2.5, 0.45, 0.7))
    assert [p.name for p in tmp_path.iterdir()] == ["a.nii.gz"]  # no temporary file left


@pytest.mark.parametrize("name, message", [("broken.nii.gz", "case x: broken.nii.gz is not gzip-compressed"),
                                           ("broken.mha", "case x: cannot read broken.mha: ")])
def test_unreadable_file_gives_one_line_error(tmp_path, name, message):
    (tmp_path / name).write_bytes(b"not an image")
    with pytest.raises(DataError) as e:
        read_image(tmp_path / name, where="case x")
    assert str(e.value).startswith(message) and "\n" not in str(e.value) and ".cxx" not in str(e.value)


def test_data_errors_survive_pickling_across_processes():
    from nnunet_gen.run.executors import FoldFailed, TrainJob
    error = pickle.loads(pickle.dumps(DataError("case x", "empty label")))
    assert (error.where, error.problem, str(error)) == ("case x", "empty label", "case x: empty label")
    failed = pickle.loads(pickle.dumps(FoldFailed(TrainJob("fold 0", ("true",), log="f.log"), 3)))
    assert isinstance(failed, FoldFailed) and failed.returncode == 3 and str(failed).startswith("fold 0: failed (exit 3)")


def _write_small_dataset(dataset_id=11, name="Small", overwrite=False, cases=3):
    job = {"command": "test", "cases": cases}
    with DatasetWriter(dataset_id, name, {0: "MR"}, {"background": 0, "tumour": 1}, job,
                       overwrite=overwrite) as w:
        for i in range(cases):
            image, label = phantom_case(i, "A", (8, 12, 12), tumour_radius=(2.0, 3.0))
            w.write_case(f"c{i}", image[None], label, GEOMETRY)
        return w.finalize(Manifest.for_real_cases([f"c{i}" for i in range(cases)]))


def test_written_dataset_is_valid_and_resolvable(nnunet_dirs):
    folder = _write_small_dataset()
    assert folder.name == "Dataset011_Small"
    ds = RawDataset.find(11)
    assert RawDataset.find("Dataset011_Small").folder == folder
    assert ds.dataset_json["numTraining"] == 3 and ds.case_ids() == ["c0", "c1", "c2"]
    ds.validate()
    case = ds.read_case("c1")
    assert case.images.shape == (1, 8, 12, 12) and case.geometry.matches(GEOMETRY, 1e-6)
    assert Manifest.load(folder).cases["c1"].kind == "real"
    assert not any(p.name.startswith(".") for p in nnunet_dirs["nnUNet_raw"].iterdir())
    assert not (nnunet_dirs["nnUNet_preprocessed"] / folder.name).exists()  # 3 patients: no 5-fold split


def test_finalize_writes_grouped_splits_for_five_or_more_patients(nnunet_dirs):
    folder = _write_small_dataset(cases=5)
    splits = json.loads((nnunet_dirs["nnUNet_preprocessed"] / folder.name / "splits_final.json").read_text())
    assert sorted(c for fold in splits for c in fold["val"]) == [f"c{i}" for i in range(5)]


def test_existing_dataset_needs_overwrite_and_ids_are_unique(nnunet_dirs):
    _write_small_dataset()
    with pytest.raises(DataError, match="already exists.*--overwrite"):
        _write_small_dataset()
    with pytest.raises(DataError, match="ID 11 is already used by Dataset011_Small"):
        _write_small_dataset(name="Other")
    folder = _write_small_dataset(overwrite=True, cases=2)
    assert RawDataset(folder).case_ids() == ["c0", "c1"]
    assert sorted(p.name for p in nnunet_dirs["nnUNet_raw"].iterdir()) == ["Dataset011_Small"]


def test_interrupted_write_resumes_without_rewriting_finished_cases(nnunet_dirs):
    job = {"command": "test"}
    labels = {"background": 0, "tumour": 1}
    image, label = phantom_case(0, "A", (8, 12, 12))
    try:
        with DatasetWriter(12, "Resume", {0: "MR"}, labels, job) as w:
            w.write_case("c0", image[None], label, GEOMETRY)
            raise KeyboardInterrupt  # killed before finishing
    except KeyboardInterrupt:
        pass
    assert not (nnunet_dirs["nnUNet_raw"] / "Dataset012_Resume").exists()
    with pytest.raises(DataError, match="interrupted run with other parameters"):
        DatasetWriter(12, "Resume", {0: "MR"}, labels, {"command": "other"})
    with DatasetWriter(12, "Resume", {0: "MR"}, labels, job) as w:
        assert w.has_case("c0") and not w.has_case("c1")
        w.write_case("c1", image[None], label, GEOMETRY)
        folder = w.finalize(Manifest.for_real_cases(["c0", "c1"]))
    assert RawDataset(folder).case_ids() == ["c0", "c1"]


def test_bad_input_removes_staging(nnunet_dirs):
    with pytest.raises(DataError):
        with DatasetWriter(13, "Bad", {0: "MR"}, {"background": 0}, {"command": "t"}) as w:
            w.write_case("c0", np.zeros((1, 4, 4, 4), np.float32), np.zeros((4, 4, 4), np.uint8), GEOMETRY)
            raise DataError("case c1", "something wrong")
    assert list(nnunet_dirs["nnUNet_raw"].iterdir()) == []


def test_validate_catches_numtraining_and_label_values(nnunet_dirs):
    folder = _write_small_dataset()
    dj = json.loads((folder / "dataset.json").read_text())
    dj["numTraining"] = 5
    (folder / "dataset.json").write_text(json.dumps(dj))
    with pytest.raises(DataError, match="numTraining=5 but labelsTr holds 3"):
        RawDataset(folder).validate()
    dj["numTraining"], dj["labels"] = 3, {"background": 0}
    (folder / "dataset.json").write_text(json.dumps(dj))
    with pytest.raises(DataError, match=r"case c0: label values \[1\] are not in dataset.json"):
        RawDataset(folder).validate()


def test_manifest_round_trip_and_checkpoint_hash(tmp_path):
    manifest = Manifest("Dataset001_X", "render naive")
    manifest.add(CaseRecord("a", "real", "a", "p1"))
    manifest.add(CaseRecord("a_naive00", "synthetic", "a", "p1", "naive_rescale", {"alpha": 0.5}, 3, "ab" * 32))
    manifest.skipped["b"] = "no tumour"
    manifest.save(tmp_path)
    back = Manifest.load(tmp_path)
    assert back.cases == manifest.cases and back.skipped == {"b": "no tumour"}
    with pytest.raises(DataError, match="already in the manifest"):
        back.add(CaseRecord("a", "real", "a", "a"))
    (tmp_path / "w.bin").write_bytes(b"abc")
    assert sha256_of_file(tmp_path / "w.bin") == \
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_phantom_is_seeded_and_centres_differ(nnunet_dirs):
    a1, l1 = phantom_case(5, "A", (24, 32, 32))
    a2, l2 = phantom_case(5, "A", (24, 32, 32))
    np.testing.assert_array_equal(a1, a2)
    b, lb = phantom_case(5, "B", (24, 32, 32))
    assert np.median(a1[l1 == 1]) > 1.2 * np.median(a1[(a1 > 20) & (l1 == 0)])
    assert np.median(b[lb == 1]) < 0.9 * np.median(b[(b > 20) & (lb == 0)])
    folder = write_phantom_dataset(21, "Ph", 3, 2, shape=(12, 16, 16))
    assert RawDataset(folder).case_ids() == ["phantomA_000", "phantomA_001", "phantomA_002"]
    assert RawDataset(folder).case_ids("labelsTs") == ["phantomB_000", "phantomB_001"]


def test_phantom_centre_c_changes_only_the_tumour_texture(nnunet_dirs):
    b, label_b = phantom_case(5, "B", (24, 32, 32))
    c, label_c = phantom_case(5, "C", (24, 32, 32))
    np.testing.assert_array_equal(label_b, label_c)
    far = ndimage.binary_dilation(label_b == 1, np.ones((3, 3, 3)), iterations=3) == 0  # beyond the 0.6 px blur
    np.testing.assert_array_equal(b[far], c[far])
    tumour = label_b == 1
    assert c[tumour].std() > 1.5 * b[tumour].std()
    assert abs(np.median(c[tumour]) - np.median(b[tumour])) < 0.2 * np.median(b[tumour])
    folder = write_phantom_dataset(22, "PhC", 1, 2, shape=(12, 16, 16), target_centre="C")
    assert RawDataset(folder).case_ids("labelsTs") == ["phantomC_000", "phantomC_001"]
