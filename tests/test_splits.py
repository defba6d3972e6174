"""Grouped splits: synthetic copies never validate and never train in their patient's validation fold."""
import json

import pytest
from nnunetv2.utilities.crossval_split import generate_crossval_split

from nnunet_gen.errors import DataError
from nnunet_gen.io.manifest import CaseRecord, Manifest
from nnunet_gen.io.splits import check_no_leak, grouped_splits


def _manifest(n_patients=7, copies=3, pseudo=2):
    """Real cases ``p<i>`` of patients ``patient<i>`` (group names differ from case IDs on purpose)."""
    m = Manifest.for_real_cases([f"p{i}" for i in range(n_patients)],
                                groups={f"p{i}": f"patient{i}" for i in range(n_patients)})
    for i in range(n_patients):
        for k in range(copies):
            m.add(CaseRecord(f"p{i}_naive{k:02d}", "synthetic", f"p{i}", f"patient{i}", "naive_rescale",
                             {"alpha": k}))
    for j in range(pseudo):
        m.add(CaseRecord(f"t{j}", "pseudo_labelled", f"t{j}", f"t{j}"))
    return m


def test_plain_dataset_gets_nnunets_default_split():
    m = Manifest.for_real_cases([f"c{i:02d}" for i in range(12)])
    assert grouped_splits(m) == generate_crossval_split(sorted(m.cases), seed=12345, n_splits=5)


def test_copies_follow_their_patient_and_never_validate():
    m = _manifest()
    splits = grouped_splits(m)
    check_no_leak(m, splits)
    plain = grouped_splits(Manifest.for_real_cases([f"p{i}" for i in range(7)]))
    for fold, reference in zip(splits, plain):
        assert fold["val"] == reference["val"]  # same validation patients as the source dataset
        val_groups = {m.cases[c].group for c in fold["val"]}
        assert val_groups and val_groups.isdisjoint(fold["val"])  # groups are not case IDs here
        for case in fold["train"]:
            assert m.cases[case].group not in val_groups
        assert {"t0", "t1"} <= set(fold["train"])
        assert all(m.cases[c].kind == "real" for c in fold["val"])
        assert len(fold["train"]) == len(m.cases) - 4 * len(fold["val"])


def test_patient_groups_keep_several_real_cases_together():
    m = Manifest.for_real_cases([f"s{i}" for i in range(12)], groups={f"s{i}": f"pat{i // 2}" for i in range(12)})
    for fold in grouped_splits(m):
        val_groups = {m.cases[c].group for c in fold["val"]}
        assert all(m.cases[c].group not in val_groups for c in fold["train"])
        assert len(fold["val"]) % 2 == 0


def test_leak_detection_and_too_few_patients():
    m = _manifest()
    splits = grouped_splits(m)
    splits[0]["train"].append(splits[0]["val"][0] + "_naive00")
    with pytest.raises(DataError, match="fold 0: cases of validation patients in training"):
        check_no_leak(m, splits)
    splits = grouped_splits(m)
    splits[1]["val"].append("p0_naive00")
    with pytest.raises(DataError, match="fold 1: a synthetic or pseudo-labelled case is in validation"):
        check_no_leak(m, splits)
    with pytest.raises(DataError, match="5 folds need at least 5"):
        grouped_splits(Manifest.for_real_cases(["a", "b", "c"]))


def test_translated_runs_of_a_patient_validate_together_and_their_copies_follow():
    """A pseudo-target dataset (``render translate``) has no real case: every run of a patient is a translated base
    case; all runs of a validation patient validate in the same fold, their GBA copies never do."""
    m = Manifest()
    for i in range(6):
        for run in range(2):
            m.add(CaseRecord(f"p{i}_run{run}", "translated", f"p{i}", f"patient{i}", "translate", {"run": run}))
            m.add(CaseRecord(f"p{i}_run{run}_gba00", "synthetic", f"p{i}_run{run}", f"patient{i}", "gba"))
    splits = grouped_splits(m)
    check_no_leak(m, splits)
    for fold in splits:
        val_patients = {c.split("_")[0] for c in fold["val"]}
        assert fold["val"] == sorted(f"{p}_run{r}" for p in val_patients for r in range(2))
        assert not any(c.split("_")[0] in val_patients for c in fold["train"])
        assert not any("gba" in c for c in fold["val"])


@pytest.mark.parametrize("patients", [4, 5])
def test_preprocessed_needs_splits_only_with_enough_patients_for_folds(patients, nnunet_dirs):
    """A dataset of < 5 patients trains fold ``all`` and never gets ``splits_final.json``: its preprocessed data is
    complete without one (a rerun must not plan and preprocess it again); with 5 patients the splits must exist."""
    from nnunet_gen.convert.phantom import write_phantom_dataset
    from nnunet_gen.preprocess import is_preprocessed
    write_phantom_dataset(631, "Few", patients, 0, shape=(4, 8, 8))
    pre = nnunet_dirs["nnUNet_preprocessed"] / "Dataset631_Few"
    assert (pre / "splits_final.json").is_file() == (patients == 5)  # the writer writes them when it can
    (pre / "splits_final.json").unlink(missing_ok=True)
    (pre / "d").mkdir(parents=True)
    (pre / "nnUNetPlans.json").write_text(json.dumps({"configurations": {"3d_fullres": {"data_identifier": "d"}}}))
    (pre / "d" / "case.b2nd").write_bytes(b"")
    assert is_preprocessed(631) == (patients < 5)
    assert not is_preprocessed(631, configuration="2d")
