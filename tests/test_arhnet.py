"""Tests of synth.arhnet (ARHNet, Huo et al. 2023): ARH module equations, eq. 1 perturbation, losses, composites,
metrics, checkpoints, whole-volume harmonisation and a small training run on seeded brain-like phantoms."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from scipy import ndimage

from synth.arhnet import (
    METHODS,
    ARHModule,
    CarveMix,
    CopyPaste,
    ForegroundIntensityPerturbation,
    Harmonizer,
    HarmonizerConfig,
    IntensityScaling,
    RAINModule,
    RandomCarveMix,
    RandomCopyPaste,
    RandomForegroundIntensityPerturbation,
    composite_from_dict,
    evaluate_harmonizers,
    harmonization_metrics,
    harmonize_volume,
    load_harmonizer,
    make_held_out_set,
    save_harmonizer,
    train_harmonizer,
)
from synth.arhnet.config import PRESETS, preset_config
from synth.arhnet.harmonize import build_generator
from synth.arhnet.histogram_matching import histogram_match_foreground
from synth.arhnet.losses import (
    boundary_total_variation_loss,
    discriminator_hinge_loss,
    extract_boundary,
    generator_hinge_loss,
    reconstruction_loss,
)
from synth.arhnet.metrics import PSNR_CAP_DB
from synth.arhnet.networks import masked_mean_std, resize_mask
from synth.arhnet.patches import lesion_window_origins
from synth.arhnet.train import (
    learning_rate_factor,
    make_validation_patches,
    scale_cases,
    split_validation,
)

SMALL_PATCH = (16, 16, 16)


def make_phantom(seed: int, shape: tuple[int, int, int] = (24, 24, 24),
                 lesions: int = 2) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brain-like ellipsoid with smooth texture and a radial gradient, plus darker spherical lesion blobs.

    Returns (image in [0, 1], lesion label uint8, brain mask)."""
    rng = np.random.default_rng(seed)
    grid = np.indices(shape).astype(np.float64)
    center = (np.array(shape) - 1) / 2
    radii = np.array(shape) * 0.42
    radius = np.sqrt(sum(((grid[a] - center[a]) / radii[a]) ** 2 for a in range(3)))
    brain = radius < 1.0
    texture = ndimage.gaussian_filter(rng.normal(size=shape), 2.0)
    texture /= texture.std()
    image = brain * (0.55 + 0.06 * texture + 0.15 * (1.0 - radius))
    lesion = np.zeros(shape, dtype=bool)
    inner = np.argwhere(radius < 0.55)
    for _ in range(lesions):
        lesion_center = inner[rng.integers(len(inner))]
        lesion_radius = rng.uniform(2.0, 3.5)
        lesion |= sum((grid[a] - lesion_center[a]) ** 2 for a in range(3)) <= lesion_radius ** 2
    image = np.where(lesion, 0.3 + 0.04 * texture, image)
    return np.clip(image, 0, 1).astype(np.float32), lesion.astype(np.uint8), brain


def small_config(method: str = "arhnet", **changes) -> HarmonizerConfig:
    values = dict(method=method, patch_size=SMALL_PATCH, depth=2, base_channels=8, discriminator_channels=8,
                  discriminator_depth=2, batch_size=4, iterations=2, generator_lr=1e-3, discriminator_lr=5e-4)
    values.update(changes)
    return HarmonizerConfig(**values)


# ----------------------------------------------------------------------------------------------------- ARH module
def _features_and_mask(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(2, 4, 6, 6, 6, generator=generator)
    mask = torch.zeros(2, 1, 6, 6, 6)
    mask[0, :, 1:3, 2:4, 2:5] = 1.0
    mask[1, :, 3:6, 0:2, 1:3] = 1.0
    return features, mask


def test_arh_module_keeps_background_and_shapes() -> None:
    torch.manual_seed(0)
    module = ARHModule(4)
    features, mask = _features_and_mask()
    output = module(features, mask)
    assert output.shape == features.shape
    background = mask.expand_as(features) == 0
    assert torch.equal(output[background], features[background])
    assert not torch.allclose(output[~background], features[~background])


def test_arh_module_follows_equations_7_to_11() -> None:
    torch.manual_seed(1)
    module = ARHModule(4)
    features, mask = _features_and_mask(1)
    features = features + 1000.0 * mask  # huge foreground values must not leak into the background statistics
    output = module(features, mask)
    fg = mask.expand_as(features).bool()
    mu = torch.zeros(2, 4, 1, 1, 1)
    sigma = torch.zeros(2, 4, 1, 1, 1)
    normalized = torch.zeros_like(features)
    for b in range(2):
        for c in range(4):
            values, background_values = features[b, c][fg[b, c]], features[b, c][~fg[b, c]]
            mu[b, c] = background_values.mean()
            sigma[b, c] = torch.sqrt(background_values.var(unbiased=False) + module.eps)
            normalized[b, c][fg[b, c]] = (values - values.mean()) / torch.sqrt(values.var(unbiased=False) + module.eps)
    stats_mean, stats_std = masked_mean_std(features, 1.0 - mask, module.eps)
    assert torch.allclose(stats_mean, mu, atol=1e-3) and torch.allclose(stats_std, sigma, atol=1e-4)
    assert mu.abs().max() < 10.0  # eq. 7 uses background voxels only
    attention = torch.sigmoid(module.attention_conv(torch.cat(
        [features.max(dim=1, keepdim=True).values, features.mean(dim=1, keepdim=True), module.feature_conv(features)],
        dim=1)))
    assert attention.shape == (2, 1, 6, 6, 6)
    gamma_f = module.gamma_fusion(module.gamma_conv(attention) + sigma)
    beta_f = module.beta_fusion(module.beta_conv(attention) + mu)
    expected = (normalized * (1 + gamma_f) + beta_f) * mask + features * (1 - mask)
    assert torch.allclose(output, expected, atol=1e-3, rtol=1e-4)


def test_arh_and_rain_without_nan_on_empty_or_full_masks() -> None:
    torch.manual_seed(2)
    features = torch.randn(1, 4, 4, 4, 4)
    for module in (ARHModule(4), RAINModule(4)):
        empty = module(features, torch.zeros(1, 1, 4, 4, 4))
        full = module(features, torch.ones(1, 1, 4, 4, 4))
        assert torch.isfinite(empty).all() and torch.isfinite(full).all()
    assert torch.equal(ARHModule(4)(features, torch.zeros(1, 1, 4, 4, 4)), features)


def test_rain_module_restyles_foreground_to_background_statistics() -> None:
    features, mask = _features_and_mask(3)
    features = features + 5.0 * mask
    output = RAINModule(4)(features, mask)
    foreground_mean, foreground_std = masked_mean_std(output, mask)
    background_mean, background_std = masked_mean_std(features, 1 - mask)
    assert torch.allclose(foreground_mean, background_mean, atol=1e-4)
    assert torch.allclose(foreground_std, background_std, atol=1e-3)
    normalized_background_mean, _ = masked_mean_std(output, 1 - mask)
    assert normalized_background_mean.abs().max() < 1e-4


def test_resize_mask_keeps_single_voxel_lesion() -> None:
    mask = torch.zeros(1, 1, 8, 8, 8)
    mask[0, 0, 5, 2, 7] = 1
    coarse = resize_mask(mask, (2, 2, 2))
    assert coarse.sum() == 1 and coarse[0, 0, 1, 0, 1] == 1


# ------------------------------------------------------------------------------------------- perturbation, scaling
def test_perturbation_is_exactly_equation_1() -> None:
    image, label, _ = make_phantom(0)
    perturbation = ForegroundIntensityPerturbation(alpha=0.2, lam=-0.1)
    perturbed = perturbation(image, label)
    inside = label > 0
    assert np.allclose(perturbed[inside], 1.2 * image[inside] - 0.1, atol=1e-6)
    assert np.array_equal(perturbed[~inside], image[~inside])
    torch_result = perturbation(torch.from_numpy(image), torch.from_numpy(label))
    assert np.allclose(torch_result.numpy(), perturbed, atol=1e-6)
    sampler = RandomForegroundIntensityPerturbation()
    samples = [sampler.sample(np.random.default_rng(seed)) for seed in range(50)]
    assert all(-0.3 <= s.alpha <= 0.3 and -0.3 <= s.lam <= 0.3 for s in samples)
    assert sampler.sample(np.random.default_rng(7)) == sampler.sample(np.random.default_rng(7))
    again, parameters = sampler(image, label, np.random.default_rng(3))
    assert np.array_equal(again, parameters(image, label))


def test_intensity_scaling_records_affine_and_warns() -> None:
    unit = np.array([0.0, 0.5, 1.0])
    assert IntensityScaling.fit(unit) == IntensityScaling()
    raw = np.array([-2.0, 0.0, 6.0])
    with pytest.warns(UserWarning, match="scaled to"):
        scaling = IntensityScaling.fit(raw)
    assert scaling.offset == -2.0 and scaling.scale == pytest.approx(1 / 8)
    assert np.allclose(scaling.apply(raw), [0.0, 0.25, 1.0])
    assert np.allclose(scaling.invert(scaling.apply(raw)), raw)


# ------------------------------------------------------------------------------------------------------- losses
def test_boundary_extractor_and_boundary_total_variation() -> None:
    mask = torch.zeros(1, 1, 8, 8, 8)
    mask[..., 2:6, 2:6, 2:6] = 1
    boundary = extract_boundary(mask)
    assert int(boundary.sum()) == 6 ** 3 - 2 ** 3
    image = torch.zeros(1, 1, 4, 3, 3)
    image[0, 0, 2:] = 1.0  # step along axis 0 between index 1 and 2
    image[0, 0, 0, 0, 1] = 0.5
    edge = torch.zeros(1, 1, 4, 3, 3)
    edge[0, 0, 1, 1, 1] = 1.0  # forward differences here: axis0 |1 - 0| = 1, axes 1 and 2: 0
    edge[0, 0, 0, 0, 0] = 1.0  # axis0 0, axis1 0, axis2 |0.5 - 0| = 0.5
    edge[0, 0, 3, 2, 2] = 1.0  # last index along every axis: no forward difference
    assert float(boundary_total_variation_loss(image, edge)) == pytest.approx(1.5 / image.numel())


def test_reconstruction_and_hinge_losses() -> None:
    real, fake = torch.tensor([0.0, 1.0]), torch.tensor([0.5, 0.0])
    assert float(reconstruction_loss(real, fake)) == pytest.approx(0.75)
    real_scores, fake_scores = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert float(discriminator_hinge_loss(real_scores, fake_scores)) == pytest.approx(0.25 + 0.5)
    assert float(generator_hinge_loss(fake_scores)) == pytest.approx(1.0)


# ------------------------------------------------------------------------------------------------------ metrics
def test_metrics_against_hand_computation() -> None:
    target = np.zeros((2, 2, 2))
    prediction = target.copy()
    prediction[0, 0, 0] = 0.5
    prediction[1, 1, 1] = 0.1
    mask = np.zeros((2, 2, 2))
    mask[0, 0, 0] = mask[0, 0, 1] = 1
    metrics = harmonization_metrics(prediction, target, mask)
    assert metrics["MAE"] == pytest.approx(0.6 / 8)
    assert metrics["fMAE"] == pytest.approx(0.25)
    assert metrics["PSNR"] == pytest.approx(10 * np.log10(1 / (0.26 / 8)))
    assert metrics["fPSNR"] == pytest.approx(10 * np.log10(1 / 0.125))
    exact = harmonization_metrics(target, target, mask)
    assert exact["PSNR"] == exact["fPSNR"] == PSNR_CAP_DB == 60.0  # an exact restoration is capped, not infinite
    nearly = prediction * 1e-4  # RMSE far below 0.1% of the range: capped too
    assert harmonization_metrics(nearly, target, mask)["fPSNR"] == 60.0
    with pytest.raises(ValueError, match="non-empty mask"):
        harmonization_metrics(prediction, target, np.zeros((2, 2, 2)))


# --------------------------------------------------------------------------------------------------- composites
def test_copy_paste_is_inside_tissue_without_overlap_and_rerenders() -> None:
    source_image, source_label, _ = make_phantom(1)
    target_image, target_label, brain = make_phantom(2, shape=(28, 28, 28), lesions=1)
    sampler = RandomCopyPaste(flip_probability=0.5, scale_range=(0.8, 1.2), min_distance=1)
    result = sampler(source_image, source_label, target_image, target_label, rng=5, tissue_mask=brain)
    pasted = result.pasted_mask
    assert pasted.any() and np.all(brain[pasted])
    assert not np.any(ndimage.binary_dilation(target_label > 0) & pasted)
    assert np.all(result.label[pasted] == 1)
    assert np.array_equal(result.label[~pasted], target_label[~pasted])
    assert np.array_equal(result.image[~pasted], target_image[~pasted])
    assert np.all(np.isfinite(result.image))
    source_lesion_values = source_image[source_label > 0]
    assert result.image[pasted].min() >= source_lesion_values.min() - 1e-6
    manifest = json.loads(json.dumps(result.parameters))
    again = composite_from_dict(manifest)(source_image, source_label, target_image, target_label)
    assert np.array_equal(again.image, result.image) and np.array_equal(again.label, result.label)
    assert sampler.sample(source_image, source_label, target_image, target_label, 5, brain) == \
        CopyPaste.from_dict(manifest)


def test_carvemix_carves_lesion_with_margin_and_label() -> None:
    source_image, source_label, _ = make_phantom(3)
    target_image, target_label, brain = make_phantom(4, lesions=1)
    transform = CarveMix(location=(0, 0, 0), margin=1.5, component=1)
    graft = transform.graft(source_image, source_label)
    components, _ = ndimage.label(source_label > 0)
    lesion_voxels = int((components == 1).sum())
    assert graft.region.sum() > lesion_voxels
    assert np.isin(graft.label[graft.region], [0, 1]).all() and (graft.label[graft.region] == 1).any()
    sampler = RandomCarveMix(min_distance=0)
    result = sampler(source_image, source_label, target_image, target_label, rng=2, tissue_mask=brain)
    assert np.all(brain[result.pasted_mask])
    assert composite_from_dict(result.parameters) == sampler.sample(source_image, source_label, target_image,
                                                                    target_label, 2, brain)
    same_place = RandomCarveMix(keep_position=True)(source_image, source_label, target_image, target_label, rng=0)
    carved = same_place.pasted_mask
    assert np.array_equal(same_place.image[carved], source_image[carved])
    assert np.array_equal(same_place.label[carved], source_label[carved])


def test_composite_errors_are_clear() -> None:
    image, label, brain = make_phantom(5)
    with pytest.raises(ValueError, match="no lesion voxels"):
        RandomCopyPaste()(image, np.zeros_like(label), image, label, rng=0)
    tiny_brain = np.zeros_like(brain)
    tiny_brain[10:12, 10:12, 10:12] = True
    with pytest.raises(ValueError, match="no location fits"):
        RandomCopyPaste()(image, label, image, np.zeros_like(label), rng=0, tissue_mask=tiny_brain)
    with pytest.raises(ValueError, match="tissue mask is empty"):
        RandomCopyPaste()(image, label, image, label, rng=0, tissue_mask=np.zeros_like(brain))
    with pytest.raises(ValueError, match="NaN"):
        RandomCopyPaste()(np.full(image.shape, np.nan), label, image, label, rng=0)


def test_histogram_matching_maps_foreground_to_surroundings() -> None:
    image, label, brain = make_phantom(6, lesions=1)
    perturbed = ForegroundIntensityPerturbation(0.3, 0.3)(image, label)
    matched = histogram_match_foreground(perturbed, label, brain, shell_radius=2)
    inside = label > 0
    assert np.array_equal(matched[~inside], perturbed[~inside])
    shell = ndimage.binary_dilation(inside, ndimage.generate_binary_structure(3, 1), iterations=2) & ~inside & brain
    assert matched[inside].min() >= perturbed[shell].min() and matched[inside].max() <= perturbed[shell].max()
    order = np.argsort(perturbed[inside])
    assert np.all(np.diff(matched[inside][order]) >= 0)


# ----------------------------------------------------------------------------------- harmonisation, checkpoints
def test_lesion_windows_cover_every_lesion_voxel() -> None:
    mask = np.zeros((40, 20, 20), dtype=np.uint8)
    mask[1:37, 5:8, 5:8] = 1  # longer than one 16^3 window
    mask[18, 19, 19] = 1  # border lesion
    covered = np.zeros(mask.shape, dtype=bool)
    for origin in lesion_window_origins(mask, SMALL_PATCH):
        box = tuple(slice(max(o, 0), max(o, 0) + s) for o, s in zip(origin, SMALL_PATCH))
        covered[box] = True
    assert covered[mask > 0].all()


def test_harmonize_volume_edge_cases_without_nan() -> None:
    torch.manual_seed(0)
    harmonizer = Harmonizer(small_config(), build_generator(small_config()).eval())
    image, label, _ = make_phantom(7, shape=(20, 24, 28))
    empty = harmonize_volume(harmonizer, image, np.zeros_like(label))
    assert np.array_equal(empty, image)
    border = np.zeros_like(label)
    border[0:3, 0:2, 25:28] = 1
    for mask in (border, label):
        output = harmonize_volume(harmonizer, image, mask)
        assert np.all(np.isfinite(output)) and np.array_equal(output[mask == 0], image[mask == 0])
        assert not np.allclose(output[mask > 0], image[mask > 0])
    small_image, small_label = image[:10, :12, :9], np.zeros((10, 12, 9), dtype=np.uint8)
    small_label[4:6, 4:6, 4:6] = 1
    assert np.all(np.isfinite(harmonize_volume(harmonizer, small_image, small_label)))
    raw = image * 1000.0 - 200.0
    with pytest.warns(UserWarning, match="scaled to"):
        raw_output = harmonize_volume(harmonizer, raw, label)
    assert np.allclose(raw_output[label == 0], raw[label == 0], atol=1e-3)


def test_checkpoint_round_trip_and_patch_size_check(tmp_path) -> None:
    image, label, _ = make_phantom(8)
    trained = train_harmonizer([make_phantom(9)], small_config(iterations=1), seed=0, progress=False)
    path = save_harmonizer(trained, tmp_path / "arhnet.safetensors")
    loaded = load_harmonizer(path, patch_size=SMALL_PATCH)
    assert loaded.config == trained.config and loaded.training_log == trained.training_log
    assert np.array_equal(harmonize_volume(loaded, image, label), harmonize_volume(trained, image, label))
    with pytest.raises(ValueError, match="trained for patch size"):
        load_harmonizer(path, patch_size=(64, 64, 64))
    composite_path = save_harmonizer(Harmonizer(small_config("composite")), tmp_path / "composite.safetensors")
    assert load_harmonizer(composite_path).method == "composite"
    assert list(tmp_path.iterdir()) and not [p for p in tmp_path.iterdir() if p.suffix == ".tmp"]


def test_config_validation_and_json_round_trip() -> None:
    config = small_config("rainnet")
    assert HarmonizerConfig.from_json(config.to_json()) == config
    assert config.weights == (100.0, 0.0, 1.0) and config.spec.decoder_normalization == "rain"
    assert small_config("arhnet").weights == (100.0, 10.0, 1.0)
    with pytest.raises(ValueError, match="unknown method"):
        HarmonizerConfig(method="pix2pix")
    with pytest.raises(ValueError, match="divisible"):
        HarmonizerConfig(patch_size=(60, 64, 64))


@pytest.mark.parametrize("method", sorted(m for m, spec in METHODS.items() if spec.learned))
def test_every_learned_method_trains_deterministically(method: str) -> None:
    config = small_config(method, iterations=2)
    trained = train_harmonizer([make_phantom(10)], config, seed=0, progress=False)
    assert len(trained.training_log) == 2 and all(np.isfinite(v) for v in trained.training_log[0].values())
    assert train_harmonizer([make_phantom(10)], config, seed=0, progress=False).training_log == trained.training_log


def test_training_reduces_foreground_error_versus_composite() -> None:
    train_cases = [make_phantom(seed) for seed in range(6)]
    test_cases = [make_phantom(100 + seed) for seed in range(4)]
    config = small_config("unet", iterations=60)
    learned = train_harmonizer(train_cases, config, seed=0, progress=False)
    table = evaluate_harmonizers({"composite": Harmonizer(small_config("composite")), "unet": learned},
                                 test_cases, SMALL_PATCH, seed=1)
    assert table["unet"]["fMAE"] < 0.7 * table["composite"]["fMAE"]
    assert table["unet"]["fPSNR"] > table["composite"]["fPSNR"] + 1.0
    held_out = make_held_out_set(test_cases, SMALL_PATCH, seed=1)
    assert [c.perturbation for c in held_out] == [c.perturbation for c in make_held_out_set(test_cases, SMALL_PATCH, 1)]


# ------------------------------------------------------------------------------------- validation, LR, presets
def test_validation_split_and_patches_are_deterministic_and_disjoint() -> None:
    train, validation = split_validation(10, 0.2, seed=3)
    assert (train, validation) == split_validation(10, 0.2, seed=3)
    assert len(validation) == 2 and not set(train) & set(validation) and sorted(train + validation) == list(range(10))
    assert split_validation(10, 0.0, seed=3) == (list(range(10)), [])
    with pytest.raises(ValueError, match="cannot be split"):
        split_validation(1, 0.2, seed=0)
    cases = scale_cases([make_phantom(seed) for seed in (20, 21)])
    config = small_config(validation_patches_per_case=3)
    first, second = make_validation_patches(cases, config, 5), make_validation_patches(cases, config, 5)
    assert first[0].shape == (6, 1, *SMALL_PATCH) and all(np.array_equal(a, b) for a, b in zip(first, second))
    assert not np.array_equal(first[1], make_validation_patches(cases, config, 6)[1])
    trained = train_harmonizer([make_phantom(seed) for seed in range(20, 25)],
                               small_config(iterations=2, validation_fraction=0.4, validation_interval=1), seed=3,
                               progress=False)
    assert trained.validation["validation_case_indices"] == split_validation(5, 0.4, 3)[1]
    assert [p["iteration"] for p in trained.validation["curve"]] == [1, 2]
    assert trained.validation["best_fPSNR"] == max(p["fPSNR"] for p in trained.validation["curve"])
    assert np.isfinite(trained.validation["composite_fPSNR"]) and trained.validation["patches"] == 2 * 4


def test_best_validation_state_is_returned_saved_and_stops_early(monkeypatch, tmp_path) -> None:
    scores, states = iter([10.0, 20.0, 15.0, 12.0, 30.0]), []

    def scripted_fpsnr(generator, patches, batch_size):  # a later, worse score must not replace the best state
        states.append({k: v.clone() for k, v in generator.state_dict().items()})
        return next(scores)

    monkeypatch.setattr("synth.arhnet.train.validation_fpsnr", scripted_fpsnr)
    config = small_config("unet", iterations=10, validation_interval=2, patience=2)
    trained = train_harmonizer([make_phantom(30)], config, seed=0, progress=False,
                               validation_cases=[make_phantom(31)])
    record = trained.validation
    assert [p["iteration"] for p in record["curve"]] == [2, 4, 6, 8] and len(trained.training_log) == 8
    assert record["best_iteration"] == 4 and record["best_fPSNR"] == 20.0 and record["stopped_early"]
    kept = trained.generator.state_dict()
    assert all(torch.equal(kept[k], states[1][k]) for k in kept)
    assert not all(torch.equal(kept[k], states[3][k]) for k in kept)
    loaded = load_harmonizer(save_harmonizer(trained, tmp_path / "best.safetensors"))
    assert loaded.validation == record
    assert all(torch.equal(loaded.generator.state_dict()[k], states[1][k]) for k in kept)


def test_learning_rate_schedules() -> None:
    cosine = small_config(iterations=11, lr_schedule="cosine", lr_min_fraction=0.01)
    factors = [learning_rate_factor(cosine, i) for i in range(11)]
    assert factors[0] == 1.0 and factors[5] == pytest.approx(0.505) and factors[10] == pytest.approx(0.01)
    assert all(a > b for a, b in itertools.pairwise(factors))
    assert {learning_rate_factor(small_config(iterations=11), i) for i in range(11)} == {1.0}
    trained = train_harmonizer([make_phantom(32), make_phantom(33)],
                               small_config("unet", iterations=4, lr_schedule="cosine", validation_fraction=0.5,
                                            validation_interval=2), seed=0, progress=False)
    lr = cosine.generator_lr
    assert [p["generator_lr"] for p in trained.validation["curve"]] == pytest.approx(
        [lr * learning_rate_factor(trained.config, i) for i in (1, 3)])
    with pytest.raises(ValueError, match="lr_schedule"):
        small_config(lr_schedule="step")


def test_presets_set_budgets_and_explicit_values_win() -> None:
    cpu = preset_config("cpu", "arhnet")
    assert cpu.patch_size == PRESETS["cpu"]["patch_size"] and cpu.lr_schedule == "cosine"
    assert cpu.validation_fraction > 0 and cpu.patience > 0
    paper = preset_config("paper")
    assert (paper.patch_size, paper.batch_size, paper.generator_lr, paper.discriminator_lr) == (
        (64, 64, 64), 16, 1e-4, 5e-5)
    assert preset_config("cpu", "unet", iterations=7, depth=None).iterations == 7
    assert preset_config(None) == HarmonizerConfig()
    with pytest.raises(ValueError, match="unknown preset"):
        preset_config("gpu")
