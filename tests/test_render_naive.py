"""`nnunet-gen render naive`: exact copies, provenance, skipped cases, grouped splits, resume, bad input."""
import json

import numpy as np
import pytest

from nnunet_gen.cli import main
from nnunet_gen.convert.phantom import phantom_case, write_phantom_dataset
from nnunet_gen.io.images import Geometry
from nnunet_gen.io.manifest import Manifest
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.writer import DatasetWriter
from nnunet_gen.render.dataset import render_dataset
from nnunet_gen.render.naive import naive_renderer

GEOMETRY = Geometry((0.8, 0.8, 3.0), (1.0, 2.0, 3.0), (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))


def _source(n=6, empty_case=True):
    job = {"command": "test source"}
    with DatasetWriter(31, "Src", {0: "MR"}, {"background": 0, "tumour": 1}, job) as w:
        for i in range(n):
            image, label = phantom_case(i, "A", (10, 16, 16), tumour_radius=(2.0, 3.0))
            if empty_case and i == n - 1:
                label[:] = 0
            w.write_case(f"p{i}", image[None], label, GEOMETRY)
        return w.finalize(Manifest.for_real_cases([f"p{i}" for i in range(n)]))


def test_copies_are_exact_and_carry_provenance(nnunet_dirs):
    _source()
    assert main(["render", "naive", "-d", "31", "-o", "32", "--alphas", "0.5", "1.5"]) == 0
    src, out = RawDataset.find(31), RawDataset.find(32)
    assert out.name == "Dataset032_SrcNaive"
    out.validate(allow_empty_labels=True)
    manifest = Manifest.load(out.folder)
    assert manifest.source_dataset == "Dataset031_Src" and manifest.skipped == {"p5": "no voxels with labels [1]"}
    assert len(manifest.of_kind("synthetic")) == 10 and out.dataset_json["numTraining"] == 16
    original = src.read_case("p2")
    for k, alpha in enumerate((0.5, 1.5)):
        record = manifest.cases[f"p2_naive{k:02d}"]
        assert (record.source_case, record.group, record.generator) == ("p2", "p2", "naive_rescale")
        assert record.params == {"alpha": alpha, "labels": [1]}
        copy = out.read_case(f"p2_naive{k:02d}")
        tumour = original.label == 1
        np.testing.assert_allclose(copy.images[0][tumour], original.images[0][tumour] * alpha, rtol=1e-6)
        np.testing.assert_array_equal(copy.images[0][~tumour], original.images[0][~tumour])
        np.testing.assert_array_equal(copy.label, original.label)
        assert copy.geometry.matches(GEOMETRY, 1e-6)
    splits = json.loads((nnunet_dirs["nnUNet_preprocessed"] / out.name / "splits_final.json").read_text())
    for fold in splits:
        assert all(manifest.cases[c].kind == "real" for c in fold["val"])
        assert not any(manifest.cases[c].source_case in fold["val"] for c in fold["train"])


def test_interrupted_render_resumes(nnunet_dirs, monkeypatch):
    _source(empty_case=False)
    calls = []
    renderer = naive_renderer((0.5,))

    def flaky(case):
        calls.append(case.case_id)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return renderer(case)

    job = {"command": "render naive", "alphas": [0.5]}
    with pytest.raises(KeyboardInterrupt):
        render_dataset(31, 33, "Resumed", flaky, job)
    staging = nnunet_dirs["nnUNet_raw"] / ".Dataset033_Resumed.partial"
    assert staging.is_dir() and not (nnunet_dirs["nnUNet_raw"] / "Dataset033_Resumed").exists()
    written = sorted(p.name for p in (staging / "labelsTr").iterdir())
    assert "p0_naive00.nii.gz" in written and "p2_naive00.nii.gz" not in written

    rewritten = []
    original_write = DatasetWriter.write_case
    monkeypatch.setattr(DatasetWriter, "write_case",
                        lambda self, case_id, *a, **k: (rewritten.append(case_id), original_write(self, case_id, *a, **k)))
    render_dataset(31, 33, "Resumed", renderer, job)
    assert "p0" not in rewritten and "p0_naive00" not in rewritten and "p2_naive00" in rewritten
    assert RawDataset.find(33).dataset_json["numTraining"] == 12


def test_bad_alpha_and_existing_target_are_refused(nnunet_dirs, capsys):
    write_phantom_dataset(41, "Ph", 5, 0, shape=(10, 16, 16))
    assert main(["render", "naive", "-d", "41", "-o", "42", "--alphas", "0.5", "0"]) == 2
    assert "alpha must be > 0" in capsys.readouterr().err
    assert not any(p.name.startswith((".Dataset042", "Dataset042")) for p in nnunet_dirs["nnUNet_raw"].iterdir())
    assert main(["render", "naive", "-d", "41", "-o", "41"]) == 2
    assert "dataset ID 41 is already used by Dataset041_Ph" in capsys.readouterr().err
