"""Per-kind sampling probabilities of nnUNetTrainerSyntheticData."""
import numpy as np
import pytest

from nnunet_gen.io.manifest import CaseRecord, Manifest
from nnunet_gen.training.synthetic_data import kind_probabilities


def _manifest():
    m = Manifest.for_real_cases(["a", "b"])
    for c in ("a_s0", "a_s1", "b_s0", "b_s1", "b_s2", "b_s3"):
        m.add(CaseRecord(c, "synthetic", c[0], c[0], "naive_rescale", {}))
    return m


def test_kind_mass_is_split_uniformly_within_each_kind():
    ids = ["a", "a_s0", "a_s1", "b", "b_s0", "b_s1", "b_s2", "b_s3"]
    p = kind_probabilities(ids, _manifest(), {"real": 1.0, "synthetic": 1.0})
    assert p.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(p[[0, 3]], 0.25)
    np.testing.assert_allclose(p[[1, 2, 4, 5, 6, 7]], 0.5 / 6)


def test_kinds_absent_from_the_fold_are_renormalised_and_zero_mass_refused():
    p = kind_probabilities(["a", "b"], _manifest(), {"real": 0.3, "synthetic": 0.7})
    np.testing.assert_allclose(p, [0.5, 0.5])
    with pytest.raises(ValueError, match=r"no probability to the \['synthetic'\]"):
        kind_probabilities(["a", "a_s0"], _manifest(), {"real": 1.0})
