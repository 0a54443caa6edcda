"""Post-processing: the centre-prior fit, each option's effect on synthetic
maps, probability output, composition and contradictions."""
from __future__ import annotations

import numpy as np
import pytest
import scipy.ndimage
import torch

from salicon import Salicon
from salicon.postprocess import CenterPrior, PostProcess, PostProcessError, fit_center_prior, parse_postprocess
from salicon.preprocess import saliency_to_image_size


def test_fit_recovers_a_known_gaussian():
    rng = np.random.default_rng(0)
    true_mean, true_cov = np.array([0.45, 0.55]), np.array([[0.02, 0.006], [0.006, 0.03]])
    images = []
    for _ in range(40):  # 40 images of 600x800, 250 fixations each
        u, v = rng.multivariate_normal(true_mean, true_cov, 250).T
        images.append((u * 800 - 0.5, v * 600 - 0.5, (600, 800)))
    prior = fit_center_prior(images, "image")
    np.testing.assert_allclose(prior.mean, true_mean, atol=0.005)
    np.testing.assert_allclose(prior.cov, true_cov, atol=0.002)
    # the fit is the maximum-likelihood estimate: no nearby Gaussian explains the points better
    x = np.concatenate([i[0] for i in images])
    y = np.concatenate([i[1] for i in images])

    def loglik(p):
        cov = np.asarray(p.cov)
        return np.sum(p.log_density(x + 0.5, y + 0.5, (600, 800))) - x.size * 0.5 * np.log(np.linalg.det(cov))
    best = loglik(prior)
    for dm in ((0.01, 0), (0, -0.01)):
        assert loglik(CenterPrior(tuple(np.add(prior.mean, dm)), prior.cov)) < best
    wider = CenterPrior(prior.mean, tuple(tuple(c * 1.1 for c in r) for r in prior.cov))
    assert loglik(wider) < best


def test_longer_side_prior_keeps_its_shape_on_other_aspect_ratios():
    rng = np.random.default_rng(1)
    u, v = rng.normal(0.5, 0.1, (2, 4000))
    prior = fit_center_prior([(u * 800, 0.5 * 600 + (v - 0.5) * 800, (600, 800))], "longer")
    assert prior.coords == "longer"
    portrait = prior.on_grid((80, 60), (800, 600))
    landscape = prior.on_grid((60, 80), (600, 800))
    np.testing.assert_allclose(portrait, landscape.T, atol=0.05)  # isotropic: the same blob, turned
    image_frame = CenterPrior.gaussian(0.1, 0.1, "image").on_grid((80, 60), (800, 600))
    assert not np.allclose(image_frame, landscape.T, atol=0.05)  # follows each side instead


def test_blur_matches_a_gaussian_filter_of_the_full_size_map():
    raw = np.zeros((38, 50))
    raw[19, 25] = 1.0
    size = (380, 500)
    blurred = PostProcess(blur=0.01).apply(raw, size)
    reference = saliency_to_image_size(torch.from_numpy(raw), size)
    reference = scipy.ndimage.gaussian_filter(reference.astype(np.float64), 0.01 * 500, mode="nearest")
    reference = (reference - reference.min()) / (reference.max() - reference.min())
    assert np.corrcoef(blurred.ravel(), reference.ravel())[0, 1] > 0.99
    plain = PostProcess().apply(raw, size)
    assert (blurred > 0.5).sum() > (plain > 0.5).sum()  # spread out


def test_prior_moves_mass_to_the_centre_and_weight_scales_it():
    rng = np.random.default_rng(2)
    raw = rng.random((38, 50))
    size = (300, 400)
    yy, xx = np.mgrid[:300, :400]
    central = (abs(yy - 150) < 60) & (abs(xx - 200) < 80)

    def central_share(post):
        m = post.apply(raw, size).astype(np.float64)
        return m[central].sum() / m.sum()
    prior = CenterPrior.gaussian(0.25, 0.25)
    shares = [central_share(PostProcess(prior=prior, prior_weight=w)) for w in (0.0, 0.5, 1.0, 2.0)]
    assert shares == sorted(shares) and shares[0] < shares[-1] - 0.1
    plain = PostProcess().apply(raw, size)
    np.testing.assert_allclose(PostProcess(prior=prior, prior_weight=0.0).apply(raw, size), plain, atol=1e-6)
    mixture = [central_share(PostProcess(prior=prior, combine="mixture", prior_weight=w)) for w in (0.0, 0.5, 1.0)]
    assert mixture == sorted(mixture)
    only_prior = PostProcess(prior=prior, combine="mixture", prior_weight=1.0).apply(raw, size)
    expected = PostProcess(prior=prior, combine="mixture", prior_weight=1.0).apply(np.ones((38, 50)), size)
    np.testing.assert_allclose(only_prior, expected, atol=1e-6)  # weight 1: the map no longer matters


def test_probability_output_sums_to_one_and_has_a_finite_log():
    raw = np.random.default_rng(3).random((38, 50))
    for spec in ("normalize=probability", "blur=0.02,prior=gaussian:0.25,normalize=probability"):
        m = parse_postprocess(spec).apply(raw, (123, 457))
        assert m.dtype == np.float32 and m.shape == (123, 457)
        assert abs(m.sum(dtype=np.float64) - 1) < 1e-5 and (m > 0).all() and np.isfinite(np.log(m)).all()
    minmax = parse_postprocess("none").apply(raw, (123, 457))
    assert minmax.min() == 0 and minmax.max() == 1


def test_none_is_the_published_output():
    raw = torch.rand(38, 50, dtype=torch.float64)
    np.testing.assert_array_equal(parse_postprocess("none").apply(raw, (60, 80)),
                                  saliency_to_image_size(raw, (60, 80)))


def test_specifications_compose_in_any_order_and_round_trip():
    a = parse_postprocess("blur=0.02,prior=gaussian:0.2x0.3,weight=1.5,normalize=probability")
    b = parse_postprocess("normalize=probability,weight=1.5,prior=gaussian:0.2x0.3,blur=0.02")
    assert a == b
    assert parse_postprocess(a.describe()) == a
    learned = CenterPrior((0.5, 0.45), ((0.02, 0.0), (0.0, 0.03)))
    default = PostProcess(blur=0.01, prior=learned)
    assert parse_postprocess("default", learned, default) == default
    assert parse_postprocess("default,normalize=probability", learned, default).normalize == "probability"
    assert parse_postprocess("default,prior=none", learned, default).prior is None
    assert parse_postprocess("prior=learned", learned).prior == learned
    assert PostProcess.from_dict(default.to_dict()) == default


@pytest.mark.parametrize("spec, message", [
    ("blur=-1", "blur must be 0 or a positive"),
    ("blur=0.02,blur=0.03", "given twice"),
    ("weight=2", "'weight' and 'combine' describe a prior"),
    ("combine=mixture", "describe a prior"),
    ("prior=gaussian:0.25,combine=mixture,weight=1.5", "fraction in \\[0, 1\\]"),
    ("prior=learned", "needs a model with a fitted centre prior"),
    ("prior=cauchy", "unknown prior"),
    ("prior=gaussian:abc", "sigmas must be numbers"),
    ("normalize=softmax", "normalize must be one of"),
    ("sharpen=2", "unknown post-processing option"),
    ("blur", "is not key=value"),
    ("", "empty post-processing"),
])
def test_contradictions_and_mistakes_are_clear_errors(spec, message):
    with pytest.raises(PostProcessError, match=message):
        parse_postprocess(spec)


def test_salicon_applies_the_models_recorded_default(small_model, small_prototxt, tmp_path):
    import json
    import shutil
    weights = tmp_path / "mine.caffemodel"
    shutil.copyfile(small_model, weights)
    image = (np.random.default_rng(4).random((40, 60, 3)) * 255).astype(np.uint8)
    plain = Salicon(weights, small_prototxt, device="cpu")
    assert plain.post.is_plain  # a user's own model: the plain output unless asked
    record = {"center_prior": CenterPrior.gaussian(0.2, 0.2).to_dict(),
              "postprocess": PostProcess(prior=CenterPrior.gaussian(0.2, 0.2)).to_dict()}
    (tmp_path / "mine.json").write_text(json.dumps(record))
    recorded = Salicon(weights, small_prototxt, device="cpu")
    assert not recorded.post.is_plain and recorded.center_prior is not None
    assert not np.allclose(recorded.compute_saliency(image), plain.compute_saliency(image))
    again_plain = Salicon(weights, small_prototxt, device="cpu", postprocess="none")
    np.testing.assert_array_equal(again_plain.compute_saliency(image), plain.compute_saliency(image))
    (tmp_path / "mine.json").write_text(json.dumps({"postprocess": {"blur": -3}}))
    with pytest.raises(PostProcessError, match="mine.json: blur must be"):
        Salicon(weights, small_prototxt, device="cpu")


def test_shipped_model_has_a_recorded_default():
    model = Salicon(device="cpu")
    assert not model.post.is_plain and model.center_prior is not None
    assert Salicon(device="cpu", postprocess="none").post.is_plain


def test_predict_and_evaluate_take_postprocess_options(tmp_path, small_model, small_prototxt, capsys):
    import csv

    from PIL import Image

    from salicon.cli import main
    rng = np.random.default_rng(5)
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / "a.png")
    common = ["--model", str(small_model), "--prototxt", str(small_prototxt), "--device", "cpu", "-q"]
    assert main(["predict", str(folder), "-o", str(tmp_path / "p"), "--npy", "--postprocess",
                 "prior=gaussian:0.2,normalize=probability", *common]) == 0
    probability = np.load(tmp_path / "p" / "a.npy")
    assert abs(probability.sum(dtype=np.float64) - 1) < 1e-5
    assert main(["predict", str(folder), "-o", str(tmp_path / "q"), "--postprocess", "prior=learned", *common]) == 1
    assert "needs a model with a fitted centre prior" in capsys.readouterr().err
    # evaluate: several configurations from one forward pass each
    data = tmp_path / "data"
    for sub in ("images", "maps", "fixations"):
        (data / sub).mkdir(parents=True)
    for i in range(3):
        Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(data / "images" / f"s{i}.png")
        fmap = np.zeros((30, 40), np.uint8)
        fmap[10:20, 15:25] = 255
        Image.fromarray(fmap).save(data / "maps" / f"s{i}.png")
        Image.fromarray(fmap).save(data / "fixations" / f"s{i}.png")
    out = tmp_path / "eval"
    assert main(["evaluate", "--dataset", f"folder:{data}", "--metrics", "NSS,CC", "--out", str(out),
                 "--postprocess", "none", "--postprocess", "blur=0.05,prior=gaussian:0.2", *common]) == 0
    rows = list(csv.DictReader(open(out / "per_image.csv")))
    models = {r["model"] for r in rows}
    assert models == {"salicon[none]", "salicon[blur=0.05,prior=gaussian:0.2]", "center_bias"}
    by = {(r["model"], r["image"]): float(r["CC"]) for r in rows}
    assert by[("salicon[none]", "s0")] != by[("salicon[blur=0.05,prior=gaussian:0.2]", "s0")]
