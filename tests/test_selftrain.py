"""Self-training orchestration, executors, pseudo-label quality controls and the predict/evaluate/rank CLI.

The orchestration tests use a fake backend (training = a subprocess that writes a checkpoint file, prediction =
the phantom's reference labels plus a spurious blob); one test runs the real stock nnU-Net commands.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from nnunet_gen.cli import main
from nnunet_gen.convert.phantom import write_phantom_dataset
from nnunet_gen.errors import DataError
from nnunet_gen.io.images import read_image, write_image
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset, nnunet_dir
from nnunet_gen.io.splits import check_no_leak, grouped_splits, write_splits
from nnunet_gen.run.executors import FoldFailed, ParallelExecutor, SequentialExecutor, SubmititExecutor, TrainJob
from nnunet_gen.selftrain import SelfTrainConfig, SelfTraining
from nnunet_gen.selftrain.calibration import (THRESHOLDS, calibrate_on_validation, pool_volume_curve,
                                              threshold_for_volume, threshold_segmentation)
from nnunet_gen.selftrain.pseudo_labels import make_pseudo_labels, robust_z_scores, size_outliers
from nnunet_gen.training.selftrain import pseudo_sampling_mass
from nnunet_gen.training.synthetic_data import kind_probabilities

SHAPE = (12, 16, 16)
WRITE_CHECKPOINT = ("import pathlib, sys; p = pathlib.Path(sys.argv[1]); p.parent.mkdir(parents=True, "
                    "exist_ok=True); sys.exit(int(sys.argv[2])) if int(sys.argv[2]) else p.write_text('ok')")


class Killed(Exception):
    """Stands in for the process being killed between two steps."""


class FakeBackend:
    """Records every nnU-Net action (training when it runs); ``kill_at`` raises at that action (1-based) before it
    happens, ``failing_folds`` make those trainings exit 1; ``under_segment`` predicts the reference without its
    border (border probability 0.3), as an ensemble under a domain shift does."""

    def __init__(self, results: Path, references: dict[str, Path], kill_at: int | None = None,
                 failing_folds: tuple[int, ...] = (), under_segment: bool = False):
        self.results, self.references = results, references
        self.kill_at, self.failing_folds, self.under_segment = kill_at, failing_folds, under_segment
        self.calls: list[tuple] = []

    def action(self, *call) -> None:
        if self.kill_at is not None and len(self.calls) + 1 == self.kill_at:
            raise Killed(str(call))
        self.calls.append(call)

    def checkpoint(self, dataset: str, fold: int) -> Path:
        return self.results / dataset / f"fold_{fold}" / "checkpoint_final.pth"

    def is_trained(self, dataset, fold):
        return self.checkpoint(dataset, fold).is_file()

    def train_job(self, dataset, fold, log, save_probabilities=False):
        """Writes only a checkpoint: validation probabilities come from :meth:`validate`."""
        code = 1 if fold in self.failing_folds else 0
        return TrainJob(f"fold {fold} of {dataset}", (sys.executable, "-c", WRITE_CHECKPOINT,
                                                      str(self.checkpoint(dataset, fold)), str(code)), {}, str(log))

    def validation_folder(self, dataset, fold):
        return self.results / dataset / f"fold_{fold}" / "validation"

    def validate(self, dataset, fold, log):
        """Predictions and probabilities of the fold's validation cases (grouped splits), like ``--val --npz``."""
        self.action("validate", dataset, fold)
        splits = json.loads((nnunet_dir("nnUNet_preprocessed") / dataset / "splits_final.json").read_text())
        raw = RawDataset.find(dataset)
        for case in splits[fold]["val"]:
            self._write_prediction(raw.label_file(case), self.validation_folder(dataset, fold), case, True)

    def predict(self, dataset, images, out, save_probabilities, log):
        self.action("predict", dataset, images.name)
        for image in sorted(images.glob("*_0000.nii.gz")):
            case = image.name[:-len("_0000.nii.gz")]
            self._write_prediction(self.references[images.name] / f"{case}.nii.gz", out, case, save_probabilities)

    def _write_prediction(self, reference: Path, out: Path, case: str, save_probabilities: bool) -> None:
        """Reference label + a one-voxel spurious blob; probabilities 0.55 on the tumour border, 0.95 inside, 0.05
        elsewhere. ``under_segment``: the inner border (probability 0.3) is left out of the segmentation and the
        outer border gets 0.1, so thresholds in (0.1, 0.3] recover the reference exactly."""
        from scipy.ndimage import binary_dilation, binary_erosion
        out.mkdir(parents=True, exist_ok=True)
        label, geometry = read_image(reference)
        label = label.astype(np.uint8)
        label[0, 0, 0] = 1
        inner, outer = (label == 1) & ~binary_erosion(label == 1), binary_dilation(label == 1) & (label != 1)
        write_image(np.where(inner, 0, label) if self.under_segment else label, geometry, out / f"{case}.nii.gz")
        if save_probabilities:
            edges = (0.3, 0.1) if self.under_segment else (0.55, 0.55)
            foreground = np.select([inner, outer, label == 1], [*edges, 0.95], 0.05).astype(np.float32)
            np.savez_compressed(out / f"{case}.npz", probabilities=np.stack([1 - foreground, foreground]))

    def preprocess(self, dataset, source):
        """Only what the orchestrator relies on: grouped splits written where nnU-Net reads them."""
        self.action("preprocess", dataset)
        raw = RawDataset.find(dataset)
        manifest = Manifest.load(raw.folder) or Manifest.for_real_cases(raw.case_ids())
        splits = grouped_splits(manifest)
        check_no_leak(manifest, splits)
        write_splits(nnunet_dir("nnUNet_preprocessed") / dataset, splits)


class CountingExecutor(SequentialExecutor):
    """Sequential executor that reports each training to the fake backend right before running it."""

    def __init__(self, backend: FakeBackend):
        self.backend = backend

    def run_all(self, jobs, on_done):
        for job in jobs:
            self.backend.action("train", job.name)
            super().run_all([job], on_done)


@pytest.fixture
def phantom(nnunet_dirs):
    """Labelled centre-A phantom (5 cases), centre-B pool of 3 (imagesTs) scored by labelsTs."""
    folder = write_phantom_dataset(801, "ST", cases_a=5, cases_b=3, seed=1, shape=SHAPE)
    references = {"imagesTs": folder / "labelsTs", "imagesTr": folder / "labelsTr"}
    return folder, references, nnunet_dirs


def _config(folder: Path, **overrides) -> SelfTrainConfig:
    values = dict(labelled="Dataset801_ST", unlabelled=str(folder / "imagesTs"), output_id_base=810,
                  trainer="nnUNetTrainer_fake", folds=(0, 1), iterations=2, epsilon=0.0)
    values.update(overrides)
    return SelfTrainConfig(**values)


def _run(config, backend, workdir, executor=None):
    executor = executor or (CountingExecutor(backend) if isinstance(backend, FakeBackend) else SequentialExecutor())
    run = SelfTraining(config, backend, executor, workdir, log=lambda message: None)
    return run, run.run()


def _expected_calls(iterations: int, folds=(0, 1)) -> list[tuple]:
    calls = [("preprocess", "Dataset801_ST")]
    for k in range(iterations + 1):
        dataset = "Dataset801_ST" if k == 0 else f"Dataset{809 + k}_STST{k}"
        if k:
            calls.append(("preprocess", dataset))
        calls += [("train", f"fold {f} of {dataset}") for f in folds] + [("predict", dataset, "imagesTs")]
    return calls


@pytest.mark.parametrize("kill_at", [2, 5, 7, 9, 12])
def test_kill_and_rerun_resumes_without_redoing_finished_steps(phantom, tmp_path, kill_at):
    folder, references, dirs = phantom
    config = _config(folder)
    killed = FakeBackend(dirs["nnUNet_results"], references, kill_at=kill_at)
    with pytest.raises(Killed):
        _run(config, killed, tmp_path / "work")
    resumed = FakeBackend(dirs["nnUNet_results"], references)
    _, rows = _run(config, resumed, tmp_path / "work")
    assert killed.calls + resumed.calls == _expected_calls(2)
    assert [row["iteration"] for row in rows] == [0, 1, 2]
    assert rows[-1]["stop"] == "reached 2 self-training iteration(s)"
    state = json.loads((tmp_path / "work" / "selftrain_state.json").read_text())
    assert "iteration_2/pseudo_labels" in state["steps"]
    for kind in ("md", "csv", "json", "png"):
        assert (tmp_path / "work" / f"selftrain_report.{kind}").stat().st_size > 0
    # a third run has nothing left to do, and reports the same iterations from the state file
    idle = FakeBackend(dirs["nnUNet_results"], references)
    _, idle_rows = _run(config, idle, tmp_path / "work")
    assert idle.calls == [] and idle_rows == rows
    assert json.loads((tmp_path / "work" / "selftrain_state.json").read_text())["steps"] == state["steps"]


def test_published_dataset_and_trained_fold_missing_from_state_are_not_redone(phantom, tmp_path):
    """A kill right after publishing a dataset / finishing a training, before the state file was written."""
    folder, references, dirs = phantom
    config = _config(folder, iterations=1)
    _run(config, FakeBackend(dirs["nnUNet_results"], references), tmp_path / "work")
    state_file = tmp_path / "work" / "selftrain_state.json"
    state = json.loads(state_file.read_text())
    for step in ("iteration_1/dataset", "iteration_1/train/fold_1"):
        del state["steps"][step]
    state_file.write_text(json.dumps(state))
    backend = FakeBackend(dirs["nnUNet_results"], references)
    _run(config, backend, tmp_path / "work")
    assert backend.calls == []


def test_pseudo_labelled_cases_train_in_every_fold_and_never_validate(phantom, tmp_path):
    folder, references, dirs = phantom
    _, rows = _run(_config(folder, iterations=1), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "w")
    dataset = dirs["nnUNet_raw"] / "Dataset810_STST1"
    manifest = Manifest.load(dataset)
    pseudo = manifest.of_kind("pseudo_labelled")
    assert pseudo == ["phantomB_000", "phantomB_001", "phantomB_002"] and len(manifest.of_kind("real")) == 5
    splits = json.loads((dirs["nnUNet_preprocessed"] / "Dataset810_STST1" / "splits_final.json").read_text())
    assert len(splits) == 5
    for fold in splits:
        assert not set(pseudo) & set(fold["val"]) and set(pseudo) <= set(fold["train"])
    # the spurious one-voxel blob of the fake prediction was removed (largest component per label)
    label, _ = read_image(dataset / "labelsTr" / "phantomB_000.nii.gz")
    reference, _ = read_image(folder / "labelsTs" / "phantomB_000.nii.gz")
    np.testing.assert_array_equal(label, reference)
    assert rows[1]["pseudo_agreement"] == pytest.approx(1.0)
    assert (tmp_path / "w" / "iteration_0" / "pseudo_labels").is_dir()  # earlier iterations are kept


def test_confidence_filter_writes_the_ignore_label(phantom, tmp_path):
    folder, references, dirs = phantom
    config = _config(folder, iterations=1, confidence=0.6)
    _run(config, FakeBackend(dirs["nnUNet_results"], references), tmp_path / "w")
    dataset = RawDataset(dirs["nnUNet_raw"] / "Dataset810_STST1")
    assert dataset.dataset_json["labels"] == {"background": 0, "tumour": 1, "ignore": 2}
    label, _ = read_image(dataset.folder / "labelsTr" / "phantomB_000.nii.gz")
    assert set(np.unique(label)) == {0, 1, 2}
    real, _ = read_image(dataset.folder / "labelsTr" / "phantomA_000.nii.gz")
    assert 2 not in np.unique(real)


def test_stop_rules_validation_dice_change_and_pseudo_label_agreement(phantom, tmp_path):
    folder, references, dirs = phantom
    agreed = _config(folder, iterations=3, epsilon=0.01)
    _, rows = _run(agreed, FakeBackend(dirs["nnUNet_results"], references), tmp_path / "a")
    assert len(rows) == 2 and "pseudo-labels agree" in rows[-1]["stop"]
    validated = _config(folder, iterations=3, epsilon=0.01, output_id_base=820,
                        val_images=str(folder / "imagesTr"), val_labels=str(folder / "labelsTr"))
    _, rows = _run(validated, FakeBackend(dirs["nnUNet_results"], references), tmp_path / "v")
    assert rows[0]["val_dice"] == pytest.approx(1.0, abs=0.05) and "validation Dice changed" in rows[1]["stop"]


def test_crashing_fold_stops_with_one_line_and_resumes(phantom, tmp_path):
    folder, references, dirs = phantom
    config = _config(folder, iterations=0)
    with pytest.raises(FoldFailed) as error:
        _run(config, FakeBackend(dirs["nnUNet_results"], references, failing_folds=(1,)), tmp_path / "w")
    message = str(error.value)
    assert "\n" not in message and "fold 1 of Dataset801_ST" in message
    assert str(tmp_path / "w" / "logs" / "iteration_0_fold_1.log") in message
    fixed = FakeBackend(dirs["nnUNet_results"], references)
    _run(config, fixed, tmp_path / "w")
    assert [c for c in fixed.calls if c[0] == "train"] == [("train", "fold 1 of Dataset801_ST")]


def test_other_parameters_refuse_the_state_but_more_iterations_continue(phantom, tmp_path):
    folder, references, dirs = phantom
    _run(_config(folder, iterations=0), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "w")
    with pytest.raises(DataError, match="other parameters .*trainer"):
        _run(_config(folder, trainer="other"), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "w")
    more = FakeBackend(dirs["nnUNet_results"], references)
    _run(_config(folder, iterations=1), more, tmp_path / "w")
    assert more.calls == _expected_calls(1)[len(_expected_calls(0)):]


def _rewrite_geometry(path: Path, spacing=None, direction=None) -> None:
    image = sitk.ReadImage(str(path))
    if spacing:
        image.SetSpacing(spacing)
    if direction:
        image.SetDirection(direction)
    sitk.WriteImage(image, str(path))


@pytest.mark.parametrize("change, message", [
    (dict(spacing=(2.0, 1.0, 1.0)), "spacing .* outside the labelled range"),
    (dict(direction=(-1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0)), "orientation .* differs"),
])
def test_unlabelled_images_with_other_geometry_are_refused(phantom, tmp_path, change, message):
    folder, references, dirs = phantom
    _rewrite_geometry(folder / "imagesTs" / "phantomB_001_0000.nii.gz", **change)
    with pytest.raises(DataError, match=f"case phantomB_001: unlabelled {message}"):
        _run(_config(folder), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "w")


def test_empty_unlabelled_set_and_everything_filtered_are_refused(phantom, tmp_path):
    folder, references, dirs = phantom
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no unlabelled images"):
        _run(_config(folder, unlabelled=str(empty)), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "a")
    with pytest.raises(DataError, match="all 3 unlabelled cases were dropped by the size filter"):
        _run(_config(folder, min_size=1e9), FakeBackend(dirs["nnUNet_results"], references), tmp_path / "b")


def test_size_outlier_rules():
    volumes = {"a": 100.0, "b": 110.0, "c": 95.0, "d": 105.0, "e": 1000.0, "f": 0.0}
    dropped = size_outliers(volumes, min_size=1.0, max_size=None, size_z=3.5)
    assert set(dropped) == {"e", "f"} and "min_size" in dropped["f"] and "robust z-score" in dropped["e"]
    assert size_outliers(volumes, None, 500.0, None).keys() == {"e"}
    np.testing.assert_allclose(robust_z_scores(np.array([1.0, 1.0, 1.0])), 0.0)


def test_make_pseudo_labels_keeps_largest_component_and_masks_uncertain_voxels(tmp_path):
    from nnunet_gen.io.images import Geometry
    geometry = Geometry((1.0, 1.0, 2.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    segmentation = np.zeros((6, 8, 8), np.uint8)
    segmentation[1:4, 1:5, 1:5] = 1
    segmentation[5, 7, 7] = 1
    write_image(segmentation, geometry, tmp_path / "p" / "c.nii.gz")
    probability = np.full((6, 8, 8), 0.9, np.float32)
    probability[2, 2, 2] = 0.5
    np.savez_compressed(tmp_path / "p" / "c.npz", probabilities=np.stack([1 - probability, probability]))
    summary = make_pseudo_labels(tmp_path / "p", tmp_path / "o", ["c"], [1], ".nii.gz", 0.6, 2, None, None, None)
    label, _ = read_image(tmp_path / "o" / "c.nii.gz")
    assert label[5, 7, 7] == 0 and label[2, 2, 2] == 2 and (label == 1).sum() == 3 * 4 * 4 - 1
    assert summary["volumes_mm3"]["c"] == pytest.approx(48 * 2.0)
    assert summary["ignored_fraction"]["c"] == pytest.approx(1 / label.size)


def test_threshold_segmentation_labels_the_most_probable_foreground_channel():
    probabilities = np.zeros((3, 1, 1, 4), np.float32)  # channels background, label 1, label 2; four voxels
    probabilities[:, 0, 0] = [[0.9, 0.6, 0.3, 0.2], [0.04, 0.1, 0.5, 0.3], [0.06, 0.3, 0.2, 0.5]]
    np.testing.assert_array_equal(threshold_segmentation(probabilities, 0.5, [1, 2])[0, 0], [0, 0, 1, 2])
    segmentation = threshold_segmentation(probabilities, 0.3, [1, 2])[0, 0]
    assert segmentation[1] == 2 and segmentation[0] == 0  # 1 - 0.6 >= 0.3: the more probable foreground label


def test_threshold_choice_by_volume_and_ties_to_one_half():
    volumes = np.linspace(1000.0, 10.0, len(THRESHOLDS))  # volume falls as the threshold rises
    target = volumes[10]
    assert threshold_for_volume(volumes, target) == THRESHOLDS[10]
    assert threshold_for_volume(np.full(len(THRESHOLDS), 5.0), 7.0) == 0.5


def _under_segmented_case(folder: Path, reference_folder: Path, case: str) -> np.ndarray:
    """A 4x4x4 cube whose outer voxel layer has probability 0.3 (argmax misses it), background 0.05."""
    from nnunet_gen.io.images import Geometry
    geometry = Geometry((1.0, 1.0, 1.0), (0.0, 0.0, 0.0), (1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0))
    reference = np.zeros((8, 8, 8), np.uint8)
    reference[2:6, 2:6, 2:6] = 1
    probability = np.full(reference.shape, 0.05, np.float32)
    probability[2:6, 2:6, 2:6] = 0.3
    probability[3:5, 3:5, 3:5] = 0.95
    write_image(reference, geometry, reference_folder / f"{case}.nii.gz")
    write_image((probability > 0.5).astype(np.uint8), geometry, folder / f"{case}.nii.gz")
    np.savez_compressed(folder / f"{case}.npz", probabilities=np.stack([1 - probability, probability]))
    return reference


@pytest.mark.parametrize("mode", ["dice", "volume"])
def test_calibration_on_validation_probabilities_recovers_the_missed_border(tmp_path, mode):
    (tmp_path / "val").mkdir()
    (tmp_path / "ref").mkdir()
    for case in ("a", "b"):
        _under_segmented_case(tmp_path / "val", tmp_path / "ref", case)
    threshold = calibrate_on_validation([tmp_path / "val"], tmp_path / "ref", [1], ".nii.gz", mode)
    assert threshold == 0.3  # every threshold in (0.05, 0.3] is exact; the one closest to 0.5 wins
    with pytest.raises(DataError, match="no validation probabilities"):
        calibrate_on_validation([tmp_path / "ref"], tmp_path / "ref", [1], ".nii.gz", mode)


def test_make_pseudo_labels_with_a_threshold_uses_the_probabilities(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "r").mkdir()
    reference = _under_segmented_case(tmp_path / "p", tmp_path / "r", "c")
    default = make_pseudo_labels(tmp_path / "p", tmp_path / "o", ["c"], [1], ".nii.gz", None, None, None, None, None)
    assert default["volumes_mm3"]["c"] == 8.0
    calibrated = make_pseudo_labels(tmp_path / "p", tmp_path / "o", ["c"], [1], ".nii.gz", None, None, None, None,
                                    None, threshold=0.3)
    assert calibrated["volumes_mm3"]["c"] == 64.0
    np.testing.assert_array_equal(read_image(tmp_path / "o" / "c.nii.gz")[0], reference)


@pytest.mark.parametrize("mode", ["dice", "volume"])
def test_validation_calibration_fixes_under_segmented_pseudo_labels_and_reports_volumes(phantom, tmp_path, mode):
    """The fake trainings save no validation probabilities: the loop reruns each fold's validation (--val --npz)."""
    folder, references, dirs = phantom
    reference_labels = str(folder / "labelsTs")
    plain = FakeBackend(dirs["nnUNet_results"], references, under_segment=True)
    _, rows = _run(_config(folder, iterations=0, reference_labels=reference_labels), plain, tmp_path / "plain")
    assert rows[0]["threshold"] is None and rows[0]["volume_ratio_mean"] < 0.8
    backend = FakeBackend(dirs["nnUNet_results"], references, under_segment=True)
    _, rows = _run(_config(folder, iterations=1, output_id_base=820, calibrate_threshold=mode,
                           reference_labels=reference_labels), backend, tmp_path / "w")
    assert [c for c in backend.calls if c[0] == "validate"] == [
        ("validate", d, f) for d in ("Dataset801_ST", "Dataset820_STST1") for f in (0, 1)]
    assert [row["threshold"] for row in rows] == [0.3, 0.3]
    assert rows[0]["volume_ratio_mean"] == pytest.approx(1.0)
    assert rows[0]["source_volume_mean"] > 0 and rows[0]["reference_volume_mean"] == rows[0]["pseudo_volume_mean"]
    label, _ = read_image(tmp_path / "w" / "iteration_0" / "pseudo_labels" / "phantomB_001.nii.gz")
    np.testing.assert_array_equal(label, read_image(folder / "labelsTs" / "phantomB_001.nii.gz")[0])
    report = json.loads((tmp_path / "w" / "selftrain_report.json").read_text())
    assert report["volumes_mm3"]["1"]["phantomB_000"]["ratio"] == pytest.approx(1.0)
    assert "| 1 | phantomB_002 |" in (tmp_path / "w" / "selftrain_report.md").read_text()


def test_prior_calibration_matches_the_labelled_mean_volume(phantom, tmp_path):
    folder, references, dirs = phantom
    backend = FakeBackend(dirs["nnUNet_results"], references, under_segment=True)
    run, rows = _run(_config(folder, iterations=0, calibrate_threshold="prior"), backend, tmp_path / "w")
    curve = pool_volume_curve(tmp_path / "w" / "iteration_0" / "predictions", run.cases, [1], ".nii.gz")
    source = run.source_volumes()["mean"]
    chosen = list(THRESHOLDS).index(rows[0]["threshold"])
    assert abs(curve[chosen] - source) == np.min(np.abs(curve - source))
    assert rows[0]["pseudo_volume_mean"] == pytest.approx(curve[chosen])
    assert rows[0]["reference_volume_mean"] is None and not any(c[0] == "validate" for c in backend.calls)


def test_size_from_source_drops_pseudo_labels_outside_the_labelled_range(phantom, tmp_path):
    folder, references, dirs = phantom
    backend = FakeBackend(dirs["nnUNet_results"], references, under_segment=True)
    run, rows = _run(_config(folder, iterations=0, size_from_source=1.0), backend, tmp_path / "w")
    source = run.source_volumes()
    pseudo = json.loads((tmp_path / "w" / "iteration_0" / "pseudo_labels" / "pseudo_labels.json").read_text())
    outside = {c for c, v in pseudo["volumes_mm3"].items() if not source["min"] <= v <= source["max"]}
    assert outside and set(pseudo["dropped"]) == outside and rows[0]["n_dropped"] == len(outside)
    _, rows = _run(_config(folder, iterations=0, size_from_source=100.0, output_id_base=820), backend, tmp_path / "x")
    assert rows[0]["n_dropped"] == 0


def test_pseudo_sampling_mass_gives_the_pseudo_cases_their_share():
    manifest = Manifest.for_real_cases(["a", "b", "c"])
    from nnunet_gen.io.manifest import CaseRecord
    for case in ("u1", "u2", "u3", "u4", "u5", "u6"):
        manifest.add(CaseRecord(case, "pseudo_labelled", case, f"unlabelled:{case}"))
    mass = pseudo_sampling_mass(manifest, 0.25)
    p = kind_probabilities(sorted(manifest.cases), manifest, mass)
    kinds = [manifest.cases[c].kind for c in sorted(manifest.cases)]
    assert sum(pi for pi, k in zip(p, kinds) if k == "pseudo_labelled") == pytest.approx(0.25)
    with pytest.raises(ValueError):
        pseudo_sampling_mass(manifest, 1.0)


def _jobs(tmp_path: Path, codes: list[int]) -> list[TrainJob]:
    return [TrainJob(f"fold {i}", (sys.executable, "-c", WRITE_CHECKPOINT, str(tmp_path / f"ck{i}"), str(code)),
                     {}, str(tmp_path / f"log{i}.txt")) for i, code in enumerate(codes)]


def test_submitit_local_executor_runs_jobs_and_reports_failures(tmp_path):
    import submitit
    local = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    local.update_parameters(timeout_min=2)
    done = []
    SubmititExecutor(local, poll_seconds=0.2).run_all(_jobs(tmp_path, [0, 0]), lambda job: done.append(job.name))
    assert sorted(done) == ["fold 0", "fold 1"] and (tmp_path / "ck0").is_file() and (tmp_path / "ck1").is_file()
    with pytest.raises(FoldFailed, match=r"fold 1: failed \(exit 3\)"):
        SubmititExecutor(local, poll_seconds=0.2).run_all(_jobs(tmp_path / "x", [0, 3]), lambda job: None)


def test_orchestrator_trains_through_submitit_local_executor(phantom, tmp_path):
    import submitit
    folder, references, dirs = phantom
    local = submitit.LocalExecutor(folder=str(tmp_path / "submitit"))
    local.update_parameters(timeout_min=2)
    backend = FakeBackend(dirs["nnUNet_results"], references)
    _run(_config(folder, iterations=0), backend, tmp_path / "w", SubmititExecutor(local, poll_seconds=0.2))
    steps = json.loads((tmp_path / "w" / "selftrain_state.json").read_text())["steps"]
    assert {"iteration_0/train/fold_0", "iteration_0/train/fold_1"} <= set(steps)
    assert all(backend.is_trained("Dataset801_ST", fold) for fold in (0, 1))


def test_parallel_executor_gives_each_worker_its_own_gpu(tmp_path):
    record = ("import os, pathlib, sys; pathlib.Path(sys.argv[1]).write_text(os.environ['CUDA_VISIBLE_DEVICES'])")
    jobs = [TrainJob(f"fold {i}", (sys.executable, "-c", record, str(tmp_path / f"gpu{i}")), {},
                     str(tmp_path / f"log{i}")) for i in range(4)]
    done = []
    ParallelExecutor(workers=2, gpus=["3", "5"]).run_all(jobs, lambda job: done.append(job.name))
    assert len(done) == 4 and {(tmp_path / f"gpu{i}").read_text() for i in range(4)} == {"3", "5"}
    with pytest.raises(FoldFailed, match="fold 0"):
        ParallelExecutor(workers=2, gpus=[]).run_all(_jobs(tmp_path, [2, 0]), lambda job: None)


def _label_folder(folder: Path, arrays: dict[str, np.ndarray]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, array in arrays.items():
        image = sitk.GetImageFromArray(array.astype(np.uint8))
        image.SetSpacing((0.8, 0.8, 1.5))
        sitk.WriteImage(image, str(folder / f"{name}.nii.gz"))
    return folder


def test_evaluate_and_rank_cli_agree_with_nnunet_dice(tmp_path, capsys):
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder_simple
    rng = np.random.default_rng(0)
    reference = {f"c{i}": (rng.random((6, 10, 10)) < 0.3) * 1 + (rng.random((6, 10, 10)) < 0.1) for i in range(3)}
    prediction = {k: np.where(rng.random(v.shape) < 0.2, 1 - np.minimum(v, 1), v) for k, v in reference.items()}
    ref = _label_folder(tmp_path / "ref", reference)
    pred = _label_folder(tmp_path / "pred", prediction)
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "-l", "1", "2", "-o", str(tmp_path / "out"),
                 "-np", "1"]) == 0
    ours = json.loads((tmp_path / "out" / "evaluation.json").read_text())
    compute_metrics_on_folder_simple(str(ref), str(pred), [1, 2], str(tmp_path / "nnunet.json"), num_processes=1)
    nnunet = json.loads((tmp_path / "nnunet.json").read_text())
    assert len(ours["cases"]) == 6
    for row in ours["cases"]:
        theirs = next(c for c in nnunet["metric_per_case"] if c["reference_file"].endswith(f"{row['case']}.nii.gz"))
        assert row["Dice"] == pytest.approx(theirs["metrics"][str(row["label"])]["Dice"], abs=1e-9)
    for kind in ("evaluation.csv", "evaluation.md", "evaluation_boxplot.png"):
        assert (tmp_path / "out" / kind).is_file()

    assert main(["rank", "-p", f"good={ref}", f"noisy={pred}", "-r", str(ref), "-l", "1", "2",
                 "-o", str(tmp_path / "rank"), "-np", "1"]) == 0
    ranking = json.loads((tmp_path / "rank" / "ranking.json").read_text())
    assert [entry["method"] for entry in ranking] == ["good", "noisy"]

    (pred / "c1.nii.gz").unlink()
    capsys.readouterr()
    assert main(["evaluate", "-p", str(pred), "-r", str(ref), "-l", "1", "-o", str(tmp_path / "x"), "-np", "1"]) == 2
    error = capsys.readouterr().err.strip()
    assert "\n" not in error and "have no prediction" in error and "c1" in error


def test_real_selftraining_run_with_stock_nnunet(phantom, tmp_path, monkeypatch):
    """Iteration 0 + 1 self-training iteration with stock nnU-Net subprocesses (CPU, smoke schedule).

    One fold keeps the suite's time down (two trainings); the 5-fold ensemble path is the same code with more folds
    and is covered by tests/test_end_to_end.py for nnUNetv2_predict -f 0 1 2 3 4."""
    from nnunet_gen.run.nnunet import NnUNetBackend
    folder, _, dirs = phantom
    for variable, value in {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}.items():
        monkeypatch.setenv(variable, value)
    config = _config(folder, trainer="nnUNetTrainerSelfTrain_smoke", folds=(0,), iterations=1,
                     pseudo_mass=0.3)
    backend = NnUNetBackend(config.trainer, folds=config.folds, device="cpu", num_processes=1,
                            train_env={"nnUNet_n_proc_DA": "0"})
    run, rows = _run(config, backend, tmp_path / "w")
    assert [row["iteration"] for row in rows] == [0, 1] and rows[1]["n_kept"] == 3
    trained = dirs["nnUNet_results"] / "Dataset810_STST1" / "nnUNetTrainerSelfTrain_smoke__nnUNetPlans__3d_fullres"
    manifest = Manifest.load(dirs["nnUNet_raw"] / "Dataset810_STST1")
    validated = [p.name[:-7] for p in (trained / "fold_0" / "validation").glob("*.nii.gz")]
    assert validated and all(manifest.cases[c].kind == "real" for c in validated)
    log = (trained / "fold_0").glob("training_log_*.txt")
    assert any("'pseudo_labelled': 0.3" in p.read_text() for p in log)
    for k in (0, 1):
        assert len(list((tmp_path / "w" / f"iteration_{k}" / "pseudo_labels").glob("*.nii.gz"))) == 3
    timing = json.loads((tmp_path / "w" / "selftrain_state.json").read_text())["timing"]
    assert 0 < timing["nnunet_seconds"] <= timing["total_seconds"]
    shutil.rmtree(dirs["nnUNet_results"])


def test_real_calibrated_selftraining_with_stock_nnunet(phantom, tmp_path, monkeypatch):
    """Iteration 0 with a calibrated threshold on stock nnU-Net (one smoke fold): ``dice`` trains with ``--npz``; a
    second run (``volume``) finds the checkpoint without probabilities and reruns ``nnUNetv2_train --val --npz``."""
    from nnunet_gen.run.nnunet import NnUNetBackend
    folder, _, dirs = phantom
    for variable, value in {"nnUNet_compile": "f", "nnUNet_def_n_proc": "1"}.items():
        monkeypatch.setenv(variable, value)
    validation = (dirs["nnUNet_results"] / "Dataset801_ST" / "nnUNetTrainer_smoke__nnUNetPlans__3d_fullres" /
                  "fold_0" / "validation")
    for mode, workdir in (("dice", tmp_path / "dice"), ("volume", tmp_path / "volume")):
        config = _config(folder, trainer="nnUNetTrainer_smoke", folds=(0,), iterations=0, calibrate_threshold=mode,
                         reference_labels=str(folder / "labelsTs"))
        backend = NnUNetBackend(config.trainer, folds=config.folds, device="cpu", num_processes=1,
                                train_env={"nnUNet_n_proc_DA": "0"})
        _, rows = _run(config, backend, workdir)
        assert rows[0]["threshold"] in THRESHOLDS and rows[0]["volume_ratio_mean"] is not None
        assert len(json.loads((workdir / "selftrain_report.json").read_text())["volumes_mm3"]["0"]) == 3
        assert list(validation.glob("*.npz"))
        for npz in validation.glob("*.npz"):
            npz.unlink()
    assert not (tmp_path / "dice" / "logs" / "iteration_0_fold_0_val.log").exists()
    assert (tmp_path / "volume" / "logs" / "iteration_0_fold_0_val.log").is_file()
    shutil.rmtree(dirs["nnUNet_results"])


def test_selftrain_cli_bad_inputs_end_with_one_line(phantom, tmp_path, capsys):
    folder, _, _ = phantom
    empty = tmp_path / "empty"
    empty.mkdir()
    base = ["selftrain", "-d", "801", "-o", "810", "--device", "cpu", "--workdir", str(tmp_path / "w")]
    cases = [(["-tr", "nnUNetTrainer_smoke", "--unlabelled", str(empty)], "no unlabelled images"),
             (["-tr", "nnUNetTrainer_smoke", "--unlabelled", str(folder / "imagesTs"), "--pseudo-mass", "0.3"],
              "does not read the real:pseudo weight"),
             (["-tr", "nnUNetTrainer_smoke"], "imagesUnlabelledTr: unlabelled image folder not found"),
             (["-tr", "nnUNetTrainer_smoke", "--unlabelled", str(folder / "imagesTs"), "--size-from-source", "0.5"],
              "must be >= 1")]
    for extra, message in cases:
        capsys.readouterr()
        assert main(base + extra) == 2
        error = capsys.readouterr().err.strip()
        assert "\n" not in error and message in error
