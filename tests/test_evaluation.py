"""Tests of nnunet_gen.evaluation.metrics: agreement with nnU-Net's Dice, brute-force and analytic surface distances,
empty-mask conventions, folder pairing errors, summaries, reports and the CrossMoDA rank table."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from scipy.ndimage import binary_dilation
from scipy.spatial.distance import cdist

from nnunet_gen.errors import DataError
from nnunet_gen.evaluation.metrics import (
    METRICS,
    binary_metrics,
    case_metrics,
    evaluate_folders,
    image_diagonal_mm,
    labels_from_dataset_json,
)
from nnunet_gen.evaluation.reports import write_ranking, write_reports
from nnunet_gen.evaluation.summary import rank_methods, summarize

SITK_SPACING = (0.7, 0.45, 2.5)  # x, y, z as SimpleITK stores it; array axis order is (z, y, x)
ARRAY_SPACING = SITK_SPACING[::-1]


def _write_label_map(path: Path, array: np.ndarray, sitk_spacing=SITK_SPACING) -> None:
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(sitk_spacing)
    sitk.WriteImage(image, str(path))


def _random_label_map(rng: np.random.Generator, shape=(8, 14, 12)) -> np.ndarray:
    """Blobby two-label map: dilated random seeds, label 2 drawn over label 1."""
    label_map = np.zeros(shape, dtype=np.uint8)
    for label in (1, 2):
        seeds = rng.random(shape) < 0.02
        label_map[binary_dilation(seeds, iterations=2)] = label
    return label_map


def _brute_force_surface(mask: np.ndarray) -> np.ndarray:
    """Coordinates of foreground voxels with a background face neighbour, by explicit neighbour lookups."""
    padded = np.pad(mask, 1, constant_values=False)
    coordinates = []
    for index in zip(*np.nonzero(mask)):
        centre = np.asarray(index) + 1
        for axis in range(mask.ndim):
            for step in (-1, 1):
                neighbour = centre.copy()
                neighbour[axis] += step
                if not padded[tuple(neighbour)]:
                    coordinates.append(index)
                    break
            else:
                continue
            break
    return np.asarray(coordinates, dtype=float)


def _brute_force_assd_hd95(prediction: np.ndarray, reference: np.ndarray, spacing) -> tuple[float, float]:
    points_pred = _brute_force_surface(prediction) * np.asarray(spacing)
    points_ref = _brute_force_surface(reference) * np.asarray(spacing)
    distances = cdist(points_pred, points_ref)
    pred_to_ref, ref_to_pred = distances.min(axis=1), distances.min(axis=0)
    assd = (pred_to_ref.mean() + ref_to_pred.mean()) / 2
    return assd, float(np.percentile(np.concatenate([pred_to_ref, ref_to_pred]), 95))


@pytest.mark.parametrize("seed", range(6))
def test_surface_distances_match_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    shape = (6, 9, 8)
    prediction = binary_dilation(rng.random(shape) < 0.05, iterations=1)
    reference = binary_dilation(rng.random(shape) < 0.05, iterations=1)
    reference[0, 0, :] = True  # foreground on the image border is surface by convention
    spacing = (2.5, 0.45, 0.7)
    result = binary_metrics(prediction, reference, spacing)
    expected_assd, expected_hd95 = _brute_force_assd_hd95(prediction, reference, spacing)
    assert result["empty"] == "none"
    assert result["ASSD"] == pytest.approx(expected_assd, rel=1e-9)
    assert result["HD95"] == pytest.approx(expected_hd95, rel=1e-9)
    intersection = np.count_nonzero(prediction & reference)
    assert result["Dice"] == pytest.approx(2 * intersection / (prediction.sum() + reference.sum()))


def test_surface_distances_2d_match_brute_force() -> None:
    rng = np.random.default_rng(3)
    prediction = binary_dilation(rng.random((12, 10)) < 0.06)
    reference = binary_dilation(rng.random((12, 10)) < 0.06)
    result = binary_metrics(prediction, reference, (0.8, 1.3))
    expected_assd, expected_hd95 = _brute_force_assd_hd95(prediction, reference, (0.8, 1.3))
    assert result["ASSD"] == pytest.approx(expected_assd)
    assert result["HD95"] == pytest.approx(expected_hd95)


@pytest.mark.parametrize("axis", [0, 2])
@pytest.mark.parametrize("shift", [1, 2, 4])
def test_single_voxels_shifted_along_an_axis(axis: int, shift: int) -> None:
    spacing = [0.9, 1.1, 1.7]
    prediction = np.zeros((9, 9, 9), dtype=bool)
    prediction[2, 2, 2] = True
    reference = np.roll(prediction, shift, axis=axis)
    result = binary_metrics(prediction, reference, spacing)
    assert result["Dice"] == 0.0
    assert result["ASSD"] == pytest.approx(shift * spacing[axis])
    assert result["HD95"] == pytest.approx(shift * spacing[axis])


@pytest.mark.parametrize("shift", [1, 2, 3])
def test_cubes_shifted_along_an_axis(shift: int) -> None:
    """Two n-cubes shifted by k voxels along axis 0 (spacing s); the other axes have a spacing so large that every
    nearest surface partner lies in the same column. Per column of the prism boundary (4n-4 columns, all n voxels
    on the surface) the distances are (k - x) s for x < k and 0 otherwise; per inner column ((n-2)^2 columns, two
    surface voxels) they are k s (near face) and min(k, n-1-k) s (far face). Both directions are identical."""
    n, s, far = 7, 0.6, 100.0
    prediction = np.zeros((n + 6, n + 2, n + 2), dtype=bool)
    prediction[1:1 + n, 1:1 + n, 1:1 + n] = True
    reference = np.roll(prediction, shift, axis=0)
    boundary_columns, inner_columns = 4 * n - 4, (n - 2) ** 2
    directed = np.concatenate([
        np.tile([(shift - x) * s if x < shift else 0.0 for x in range(n)], boundary_columns),
        np.tile([shift * s, min(shift, n - 1 - shift) * s], inner_columns),
    ])
    result = binary_metrics(prediction, reference, (s, far, far))
    assert result["Dice"] == pytest.approx((n - shift) / n)
    assert result["ASSD"] == pytest.approx(directed.mean())
    assert result["ASSD"] == pytest.approx(
        (boundary_columns * s * shift * (shift + 1) / 2 + inner_columns * s * (shift + min(shift, n - 1 - shift)))
        / (boundary_columns * n + 2 * inner_columns))
    assert result["HD95"] == pytest.approx(np.percentile(np.concatenate([directed, directed]), 95))


def test_empty_conventions() -> None:
    shape, spacing = (4, 5, 6), (2.0, 1.0, 0.5)
    empty = np.zeros(shape, dtype=bool)
    full = np.zeros(shape, dtype=bool)
    full[1:3, 1:3, 1:3] = True
    both = binary_metrics(empty, empty, spacing)
    assert (both["Dice"], both["ASSD"], both["HD95"], both["empty"]) == (1.0, 0.0, 0.0, "both")
    diagonal = float(np.sqrt(8.0 ** 2 + 5.0 ** 2 + 3.0 ** 2))
    assert image_diagonal_mm(shape, spacing) == pytest.approx(diagonal)
    missed = binary_metrics(empty, full, spacing)
    assert (missed["Dice"], missed["empty"]) == (0.0, "prediction")
    assert missed["ASSD"] == missed["HD95"] == pytest.approx(diagonal)
    hallucinated = binary_metrics(full, empty, spacing, empty_penalty_mm=350.0)
    assert (hallucinated["Dice"], hallucinated["ASSD"], hallucinated["HD95"], hallucinated["empty"]) == \
        (0.0, 350.0, 350.0, "reference")
    per_label = case_metrics(full.astype(np.uint8) * 2, full.astype(np.uint8) * 2, spacing, [1, 2])
    assert per_label[1]["empty"] == "both" and per_label[2]["Dice"] == 1.0 and per_label[2]["ASSD"] == 0.0


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path, dict[str, tuple[np.ndarray, np.ndarray]]]:
    rng = np.random.default_rng(0)
    pred_folder, ref_folder = tmp_path / "pred", tmp_path / "ref"
    pred_folder.mkdir()
    ref_folder.mkdir()
    pairs = {}
    for index in range(3):
        reference = _random_label_map(rng)
        prediction = np.where(rng.random(reference.shape) < 0.1, rng.integers(0, 3, reference.shape), reference)
        if index == 2:
            reference[reference == 2] = 0  # label 2 absent from the reference...
            prediction[prediction == 2] = 0  # ...and from the prediction: nnU-Net reports NaN, we report 1
        pairs[f"case_{index:03d}"] = (prediction.astype(np.uint8), reference)
        _write_label_map(pred_folder / f"case_{index:03d}.nii.gz", prediction)
        _write_label_map(ref_folder / f"case_{index:03d}.nii.gz", reference)
    return pred_folder, ref_folder, pairs


def test_dice_matches_nnunet_and_distances_use_file_spacing(folders, tmp_path: Path) -> None:
    from nnunetv2.evaluation.evaluate_predictions import compute_metrics_on_folder2, load_summary_json

    pred_folder, ref_folder, pairs = folders
    dataset_json = {"labels": {"background": 0, "VS": 1, "cochlea": 2}, "file_ending": ".nii.gz",
                    "channel_names": {"0": "T2"}, "numTraining": 3}
    (tmp_path / "dataset.json").write_text(json.dumps(dataset_json))
    (tmp_path / "plans.json").write_text(json.dumps({"label_manager": "LabelManager"}))
    compute_metrics_on_folder2(str(ref_folder), str(pred_folder), str(tmp_path / "dataset.json"),
                               str(tmp_path / "plans.json"), output_file=str(tmp_path / "nnunet.json"),
                               num_processes=1)
    nnunet = load_summary_json(str(tmp_path / "nnunet.json"))
    labels = labels_from_dataset_json(tmp_path / "dataset.json")
    rows = evaluate_folders(pred_folder, ref_folder, labels, num_processes=1)
    assert labels == [1, 2] and len(rows) == 6
    ours = {(row["case"], row["label"]): row for row in rows}
    compared = 0
    for case_result in nnunet["metric_per_case"]:
        case = Path(case_result["reference_file"]).name[: -len(".nii.gz")]
        for label in labels:
            nnunet_dice = case_result["metrics"][label]["Dice"]
            if np.isnan(nnunet_dice):
                assert ours[(case, label)]["Dice"] == 1.0 and ours[(case, label)]["empty"] == "both"
            else:
                assert ours[(case, label)]["Dice"] == pytest.approx(nnunet_dice, rel=1e-12)
                compared += 1
    assert compared == 5
    prediction, reference = pairs["case_000"]
    expected = case_metrics(prediction, reference, ARRAY_SPACING, labels)
    for label in labels:
        for metric in METRICS:
            assert ours[("case_000", label)][metric] == pytest.approx(expected[label][metric])


def test_2d_files_keep_their_two_spacings(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    (tmp_path / "pred").mkdir()
    (tmp_path / "ref").mkdir()
    prediction = binary_dilation(rng.random((12, 10)) < 0.06).astype(np.uint8)
    reference = binary_dilation(rng.random((12, 10)) < 0.06).astype(np.uint8)
    _write_label_map(tmp_path / "pred" / "a.nii.gz", prediction, sitk_spacing=(1.3, 0.8))
    _write_label_map(tmp_path / "ref" / "a.nii.gz", reference, sitk_spacing=(1.3, 0.8))
    [row] = evaluate_folders(tmp_path / "pred", tmp_path / "ref", [1], num_processes=1)
    expected = binary_metrics(prediction == 1, reference == 1, (0.8, 1.3))
    assert row["ASSD"] == pytest.approx(expected["ASSD"]) and row["HD95"] == pytest.approx(expected["HD95"])


def test_missing_predictions(folders) -> None:
    pred_folder, ref_folder, _ = folders
    (pred_folder / "case_001.nii.gz").unlink()
    (pred_folder / "case_002.nii.gz").unlink()
    with pytest.raises(ValueError, match=r"2 of 3 reference cases have no prediction .*: case_001, case_002"):
        evaluate_folders(pred_folder, ref_folder, [1, 2], num_processes=1)
    rows = evaluate_folders(pred_folder, ref_folder, [1], num_processes=1, allow_missing=True)
    missing = [row for row in rows if row["case"] == "case_001"]
    assert missing[0]["missing_prediction"] and missing[0]["Dice"] == 0.0 and missing[0]["empty"] == "prediction"
    assert not rows[0]["missing_prediction"]


def test_geometry_mismatch_names_the_case(folders) -> None:
    pred_folder, ref_folder, pairs = folders
    _write_label_map(pred_folder / "case_001.nii.gz", pairs["case_001"][0], sitk_spacing=(0.7, 0.45, 3.0))
    with pytest.raises(DataError, match="case case_001: prediction case_001.nii.gz: spacing"):
        evaluate_folders(pred_folder, ref_folder, [1], num_processes=1)
    _write_label_map(pred_folder / "case_001.nii.gz", pairs["case_001"][0][:, :-1])
    with pytest.raises(DataError, match="case case_001: prediction case_001.nii.gz: shape"):
        evaluate_folders(pred_folder, ref_folder, [1], num_processes=1)


def test_summary_statistics_and_reports(tmp_path: Path) -> None:
    dice = np.array([0.2, 0.9, 0.8, 0.85, 0.0])
    assd = np.array([9.0, 0.5, 1.0, 0.7, 350.0])
    rows = [{"case": f"c{i}", "label": 1, "Dice": d, "ASSD": a, "HD95": 2 * a, "n_pred": 1, "n_ref": 1,
             "empty": "prediction" if d == 0 else "none", "missing_prediction": False}
            for i, (d, a) in enumerate(zip(dice, assd))]
    summary = summarize(rows)
    assert summary["1"]["Dice"]["worst"] == 0.0 and summary["1"]["Dice"]["best"] == 0.9
    assert summary["1"]["ASSD"]["worst"] == 350.0 and summary["1"]["ASSD"]["best"] == 0.5
    assert summary["1"]["ASSD"]["p95"] == pytest.approx(np.percentile(assd, 95))
    assert summary["1"]["Dice"]["p25"] == pytest.approx(np.percentile(dice, 25))
    assert summary["1"]["Dice"]["std"] == pytest.approx(np.std(dice, ddof=1))
    assert summary["1"]["empty"] == {"none": 4, "prediction": 1}
    paths = write_reports(rows, tmp_path / "out", summary)
    with open(paths["csv"]) as stream:
        csv_rows = list(csv.DictReader(stream))
    assert [float(r["Dice"]) for r in csv_rows] == list(dice)
    saved = json.loads(paths["json"].read_text())
    assert saved["summary"]["1"]["ASSD"]["p95"] == pytest.approx(summary["1"]["ASSD"]["p95"])
    assert len(saved["cases"]) == 5
    markdown = paths["markdown"].read_text()
    assert "| Worst | 0.0000 | 350.000 | 700.000 |" in markdown and "| 1st perc. |" in markdown
    assert paths["boxplot"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == \
        ["evaluation.csv", "evaluation.json", "evaluation.md", "evaluation_boxplot.png"]


def _rows(values: dict[str, tuple[float, float]]) -> list[dict]:
    return [{"case": case, "label": 1, "Dice": dice, "ASSD": assd} for case, (dice, assd) in values.items()]


def test_rank_table_with_ties(tmp_path: Path) -> None:
    rows_by_method = {
        "A": _rows({"c1": (0.9, 1.0), "c2": (0.7, 3.0)}),
        "B": _rows({"c1": (0.9, 2.0), "c2": (0.8, 1.0)}),
        "C": _rows({"c1": (0.5, 2.0), "c2": (0.8, 1.0)}),
    }
    # c1 Dice ranks A 1.5, B 1.5, C 3; c1 ASSD: A 1, B 2.5, C 2.5; c2 Dice: A 3, B 1.5, C 1.5; c2 ASSD: A 3, B, C 1.5
    ranking = rank_methods(rows_by_method)
    scores = {entry["method"]: entry["score"] for entry in ranking}
    assert scores == pytest.approx({"A": 8.5 / 4, "B": 7.0 / 4, "C": 8.5 / 4})
    assert [(e["position"], e["method"]) for e in ranking] == [(1, "B"), (2, "A"), (2, "C")]
    assert ranking[0]["mean_rank_Dice"] == pytest.approx(1.5) and ranking[0]["mean_ASSD_1"] == pytest.approx(1.5)
    # CrossMoDA's own script gives tied methods the minimum rank
    crossmoda = {e["method"]: e["score"] for e in rank_methods(rows_by_method, tie_method="min")}
    assert crossmoda == pytest.approx({"A": 8 / 4, "B": 5 / 4, "C": 7 / 4})
    paths = write_ranking(ranking, tmp_path)
    assert paths["markdown"].read_text().splitlines()[2].startswith("| 1 | B | 1.7500 |")
    with open(paths["csv"]) as stream:
        assert [r["method"] for r in csv.DictReader(stream)] == ["B", "A", "C"]


def test_rank_requires_the_same_cases() -> None:
    with pytest.raises(ValueError, match="different cases/labels .*c2/label 1"):
        rank_methods({"A": _rows({"c1": (0.9, 1.0), "c2": (0.5, 1.0)}), "B": _rows({"c1": (0.9, 1.0)})})


def test_parallel_evaluation_matches_sequential(folders) -> None:
    pred_folder, ref_folder, _ = folders
    sequential = evaluate_folders(pred_folder, ref_folder, [1, 2], num_processes=1)
    assert evaluate_folders(pred_folder, ref_folder, [1, 2], num_processes=2) == sequential
