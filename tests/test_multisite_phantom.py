"""Multi-site phantom: one subject per seed across sites (only the site's contrast and acquisition change), sites in
the manifest where :mod:`nnunet_gen.io.sites` finds them, held-out folders per seen and unseen site, the CLI."""
from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from nnunet_gen.cli import main
from nnunet_gen.convert.crossmodal_phantom import WM, crossmodal_subject
from nnunet_gen.convert.multisite_phantom import SITES, multisite_case, held_out_folders, write_multisite_phantom
from nnunet_gen.io.raw_dataset import RawDataset
from nnunet_gen.io.sites import case_sites

SMALL = (16, 24, 24)


def _tumour_to_white_matter(image: np.ndarray, seed: int) -> float:
    subject = crossmodal_subject(seed, image.shape)
    white = ndimage.binary_erosion(subject.tissue == WM) & ~subject.tumour
    return float(image[subject.tumour].mean() / image[white].mean())


def test_a_seed_is_one_subject_at_every_site_with_the_sites_contrast():
    image, label = multisite_case(3, "A")
    again, label_again = multisite_case(3, "A")
    np.testing.assert_array_equal(image, again)
    np.testing.assert_array_equal(label, label_again)
    assert image.dtype == np.float32 and label.sum() > 50
    ratios = {}
    for site in SITES:
        other, other_label = multisite_case(3, site)
        np.testing.assert_array_equal(other_label, label)
        ratios[site] = _tumour_to_white_matter(other, 3)
    # the site's tumour/WM contrast survives the acquisition (noise, bias, gamma) A and C above B above D
    assert min(ratios["A"], ratios["C"]) > ratios["B"] > ratios["D"] > 1.0
    with pytest.raises(ValueError, match="site must be one of"):
        multisite_case(3, "E")


def test_dataset_layout_sites_and_cli(nnunet_dirs):
    folder = write_multisite_phantom(780, "MS", 2, 1, seed=4, shape=SMALL)
    raw = RawDataset(folder)
    train = raw.case_ids()
    assert len(train) == 6
    assert case_sites(raw.name, train) == {c: c.split("_")[0] for c in train}
    for site in "ABCD":
        images, labels = held_out_folders(site)
        assert len(list((folder / images).glob(f"{site}_*_0000.nii.gz"))) == 1
        assert len(list((folder / labels).glob(f"{site}_*.nii.gz"))) == 1
    assert not any(c.startswith("D") for c in train)  # the unseen site never trains

    assert main(["phantom-multisite", "-d", "781", "--train", "1", "--test", "1", "--seen", "A", "B",
                 "--unseen", "--shape", *map(str, SMALL)]) == 0
    assert main(["phantom-multisite", "-d", "781", "--train", "1", "--test", "1", "--shape", *map(str, SMALL)]) != 0


def test_real_anatomy_builder_on_stand_in_brains(nnunet_dirs):
    from test_anatomy_shift import stand_in, stand_in_maps

    from benchmarks.anatomy.multisite import build_dataset, multisite_case
    anatomies = {name: stand_in(name, k) for k, name in enumerate(("a", "b", "t"))}
    subjects = {name: (anatomy, stand_in_maps(anatomy)) for name, anatomy in anatomies.items()}
    image_a, label_a = multisite_case(subjects["a"], "A", seed=3, crop=(24, 24, 24))
    image_d, label_d = multisite_case(subjects["a"], "D", seed=3, crop=(24, 24, 24))
    np.testing.assert_array_equal(label_a, label_d)  # same case seed: same crop and lesion at every site
    assert label_a.sum() >= 20 and not np.allclose(image_a, image_d)

    folder = build_dataset(subjects, 782, "MSA", seed=1, train_per_subject=1, test_per_site=1, training=("a", "b"),
                           test="t", crop=(24, 24, 24))
    raw = RawDataset(folder)
    assert case_sites(raw.name, raw.case_ids()) == {c: c.split("_")[0] for c in raw.case_ids()}
    assert len(raw.case_ids()) == 6 and all("_t_" not in c for c in raw.case_ids())
    for site in "ABCD":
        assert [p.name.split("_")[1] for p in (folder / held_out_folders(site)[0]).iterdir()] == ["t"]
