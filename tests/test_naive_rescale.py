"""The on-the-fly naive rescaling must equal rescaling the raw case and letting nnU-Net normalise it."""
import numpy as np
import pytest
import torch
from nnunetv2.preprocessing.cropping.cropping import crop_to_nonzero
from nnunetv2.preprocessing.normalization.default_normalization_schemes import CTNormalization, ZScoreNormalization

from nnunet_gen.augment.intensity import case_channel_stats
from nnunet_gen.augment.naive_rescale import NaiveRescale
from nnunet_gen.augment.transforms import (
    CaseContext,
    CaseContextDataset,
    NaiveRescaleTransform,
    RandomNaiveRescaleTransform,
)
from nnunet_gen.convert.phantom import phantom_case

CT_PROPS = {"0": {"mean": 90.0, "std": 30.0, "percentile_00_5": 0.0, "percentile_99_5": 160.0}}


def nnunet_normalised(raw: np.ndarray, label: np.ndarray, scheme, use_mask: bool):
    """What nnU-Net's preprocessor makes of a raw case (crop to nonzero, then normalise)."""
    data, seg, _ = crop_to_nonzero(raw[None].astype(np.float32), label[None].astype(np.int16))
    norm = scheme(use_mask_for_norm=use_mask, intensityproperties=CT_PROPS["0"])
    return norm.run(data[0].copy(), seg[0]), seg


@pytest.mark.parametrize("use_mask", [False, True])
@pytest.mark.parametrize("alpha", [0.5, 0.8, 1.5])
def test_zscore_transform_equals_offline_rescaling(use_mask, alpha):
    raw, label = phantom_case(7, "A", shape=(20, 28, 28))
    normalised, seg = nnunet_normalised(raw, label, ZScoreNormalization, use_mask)
    expected, _ = nnunet_normalised(NaiveRescale(alpha, (1,))(raw, label), label, ZScoreNormalization, use_mask)

    stats = case_channel_stats(raw[None], label, ["ZScoreNormalization"], [use_mask], CT_PROPS, (1,))
    out = NaiveRescaleTransform(alpha, (1,), [use_mask])(
        image=torch.from_numpy(normalised[None]), segmentation=torch.from_numpy(seg).to(torch.int16),
        stats=stats)["image"][0].numpy()
    np.testing.assert_allclose(out, expected, atol=2e-4)
    # A plain multiply of the normalised tumour is what the transform must NOT do.
    naive_wrong = np.where(seg[0] == 1, normalised * alpha, normalised)
    assert np.abs(naive_wrong - expected).max() > 0.1


def test_ct_transform_equals_offline_rescaling():
    raw, label = phantom_case(8, "A", shape=(20, 28, 28))
    normalised, seg = nnunet_normalised(raw, label, CTNormalization, False)
    expected, _ = nnunet_normalised(NaiveRescale(0.5, (1,))(raw, label), label, CTNormalization, False)
    stats = case_channel_stats(raw[None], label, ["CTNormalization"], [False], CT_PROPS, (1,))
    out = NaiveRescaleTransform(0.5, (1,), [False])(
        image=torch.from_numpy(normalised[None]), segmentation=torch.from_numpy(seg).to(torch.int16),
        stats=stats)["image"][0].numpy()
    np.testing.assert_allclose(out, expected, atol=1e-4)


def test_unsupported_normalisation_is_refused():
    raw, label = phantom_case(8, "A", shape=(12, 16, 16))
    with pytest.raises(ValueError, match="RescaleTo01Normalization is not supported"):
        case_channel_stats(raw[None], label, ["RescaleTo01Normalization"], [False], CT_PROPS, (1,))


class _FakeDataset:
    identifiers = ["a"]

    def __init__(self, image, seg):
        self.image, self.seg = image, seg

    def load_case(self, identifier):
        return self.image, self.seg, None, {}


def test_random_transform_reads_the_loaded_case_statistics():
    raw, label = phantom_case(9, "A", shape=(16, 20, 20))
    normalised, seg = nnunet_normalised(raw, label, ZScoreNormalization, False)
    stats = case_channel_stats(raw[None], label, ["ZScoreNormalization"], [False], CT_PROPS, (1,))
    context = CaseContext({"a": stats})
    dataset = CaseContextDataset(_FakeDataset(normalised[None], seg), context)
    assert dataset.identifiers == ["a"]
    transform = RandomNaiveRescaleTransform([0.5], (1,), [False], context, p=1.0)
    image, seg_loaded, _, _ = dataset.load_case("a")
    out = transform(image=torch.from_numpy(image.copy()), segmentation=torch.from_numpy(seg_loaded).to(torch.int16))
    expected, _ = nnunet_normalised(NaiveRescale(0.5, (1,))(raw, label), label, ZScoreNormalization, False)
    np.testing.assert_allclose(out["image"][0].numpy(), expected, atol=2e-4)
    never = RandomNaiveRescaleTransform([0.5], (1,), [False], context, p=0.0)
    untouched = never(image=torch.from_numpy(image.copy()), segmentation=torch.from_numpy(seg_loaded).to(torch.int16))
    np.testing.assert_array_equal(untouched["image"].numpy(), image)


def test_alpha_must_be_positive():
    with pytest.raises(ValueError):
        NaiveRescale(0.0)
    with pytest.raises(ValueError):
        RandomNaiveRescaleTransform([0.5, -1.0], (1,), [False], CaseContext({}), p=1.0)


def test_continuous_alpha_covers_the_interval_and_the_discrete_one_only_its_set():
    context = CaseContext({})
    discrete = RandomNaiveRescaleTransform([0.5, 0.8, 1.5], (1,), [False], context, p=1.0)
    continuous = RandomNaiveRescaleTransform([0.5, 0.8, 1.5], (1,), [False], context, p=1.0, continuous=True)
    np.random.seed(0)
    drawn = [continuous.sample_alpha() for _ in range(400)]
    assert min(drawn) >= 0.5 and max(drawn) <= 1.5 and len(set(drawn)) == 400
    assert np.histogram(drawn, bins=4, range=(0.5, 1.5))[0].min() > 60  # spread over the whole interval
    assert {discrete.sample_alpha() for _ in range(200)} == {0.5, 0.8, 1.5}
    np.random.seed(1)
    first = [continuous.sample_alpha() for _ in range(5)]
    np.random.seed(1)
    assert first == [continuous.sample_alpha() for _ in range(5)]  # nnU-Net seeds numpy per worker
    half = RandomNaiveRescaleTransform([0.5, 1.5], (1,), [False], context, p=0.5, continuous=True)
    assert 0.4 < np.mean([half.sample_alpha() is None for _ in range(1000)]) < 0.6
