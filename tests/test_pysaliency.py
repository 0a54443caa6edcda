"""salicon.pysaliency: the model as pysaliency models, the benchmark submission
format read back by pysaliency's own loader, and the metrics on OSIE against
salicon evaluate."""
from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

from salicon import Salicon
from salicon.postprocess import log_density, to_probability

from .conftest import ROOT, SHARED

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    pysaliency = pytest.importorskip("pysaliency", reason="pysaliency is not installed "
                                                         "(pip install \"salicon[pysaliency]\")")

from salicon.pysaliency import CenterBiasModel, SaliconModel, SaliconSaliencyMapModel, fixation_map_model, load_osie  # noqa: E402

OSIE = SHARED / "data" / "osie"
needs_osie = pytest.mark.skipif(not (OSIE / "fixations.mat").exists(), reason=f"OSIE not found at {OSIE}")


@pytest.fixture(scope="module")
def small_salicon(small_model, small_prototxt) -> Salicon:
    return Salicon(small_model, small_prototxt, device="cpu", precision="fp32")


@pytest.fixture(scope="module")
def stimuli(tmp_path_factory):
    """Three images of different sizes, one grey, as pysaliency FileStimuli."""
    folder = tmp_path_factory.mktemp("stimuli")
    rng = np.random.default_rng(5)
    paths = []
    for name, shape in (("a", (90, 130, 3)), ("b", (64, 48, 3)), ("grey", (77, 101))):
        path = folder / f"{name}.png"
        Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)
        paths.append(str(path))
    return pysaliency.FileStimuli(paths)


def test_log_density_is_a_normalised_density_at_the_image_size(small_salicon, stimuli):
    model = SaliconModel(salicon=small_salicon)
    for stimulus in stimuli:
        density = model.log_density(stimulus)
        assert density.dtype == np.float64
        assert density.shape == stimulus.shape[:2]
        assert np.isfinite(density).all()
        assert np.exp(density).sum() == pytest.approx(1.0, abs=1e-9)


def test_maps_equal_compute_saliency_for_colour_and_grey_arrays(small_salicon, stimuli):
    model = SaliconSaliencyMapModel(salicon=small_salicon)
    density = SaliconModel(salicon=small_salicon)
    for stimulus in stimuli:
        expected = small_salicon.compute_saliency(stimulus.stimulus_data)
        np.testing.assert_allclose(model.saliency_map(stimulus), expected, atol=1e-7)
        # the log-density is the map made a distribution, computed independently here
        p = expected.astype(np.float64) + 1e-6 * expected.mean(dtype=np.float64)
        np.testing.assert_allclose(density.log_density(stimulus), np.log(p / p.sum()), rtol=1e-6, atol=1e-9)


def test_to_probability_and_log_density_refuse_bad_maps():
    with pytest.raises(ValueError, match="non-negative"):
        to_probability(np.array([[0.5, -0.1]]))
    with pytest.raises(ValueError, match="finite"):
        log_density(np.array([[0.5, np.nan]]))
    uniform = log_density(np.zeros((3, 4)))  # a blank map is the uniform density
    np.testing.assert_allclose(uniform, np.log(1 / 12))


def test_predict_log_density_files_load_in_pysaliency(small_model, small_prototxt, stimuli, tmp_path):
    """The submission folder salicon predict --format log-density writes is read
    by pysaliency's ModelFromDirectory (which checks the normalisation) and gives
    the log-densities of SaliconModel."""
    folder = str(tmp_path / "submission")
    images = [str(p) for p in stimuli.filenames]
    for fmt in ("log-density", "probability"):
        out = f"{folder}_{fmt}"
        done = subprocess.run([sys.executable, "-m", "salicon", "predict", *images, "-o", out, "--format", fmt,
                               "--model", str(small_model), "--prototxt", str(small_prototxt), "--device", "cpu",
                               "--quiet"], capture_output=True, text=True, cwd=ROOT)
        assert done.returncode == 0, done.stderr
    reference = SaliconModel(small_model, prototxt=small_prototxt, device="cpu")
    from_files = pysaliency.ModelFromDirectory(stimuli, f"{folder}_log-density")
    probabilities = pysaliency.SaliencyMapModelFromDirectory(stimuli, f"{folder}_probability")
    for stimulus in stimuli:
        expected = reference.log_density(stimulus)
        got = from_files.log_density(stimulus)
        assert got.dtype == np.float64
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(probabilities.saliency_map(stimulus), np.exp(expected), rtol=1e-5, atol=1e-12)


def test_format_refuses_options_it_cannot_honour(small_model, small_prototxt, stimuli, tmp_path):
    done = subprocess.run([sys.executable, "-m", "salicon", "predict", str(stimuli.filenames[0]), "-o",
                           str(tmp_path / "x"), "--format", "log-density", "--threshold", "0.2", "--model",
                           str(small_model), "--prototxt", str(small_prototxt)], capture_output=True, text=True,
                          cwd=ROOT)
    assert done.returncode == 2
    assert "does not go with --npy, --threshold" in done.stderr
    assert not (tmp_path / "x").exists()


def test_missing_pysaliency_names_the_install_command():
    code = ("import sys; sys.modules['pysaliency'] = None\n"
            "try:\n    import salicon.pysaliency\nexcept ImportError as e:\n    print(e)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert 'pip install "salicon[pysaliency]"' in done.stdout


@needs_osie
def test_load_osie_indexes_the_pixels_salicon_evaluate_scores():
    from salicon.data import OSIEDataset
    from salicon.fixations import fixated_pixels

    stimuli, fixations = load_osie(OSIE, names=["1001", "1002"])
    assert len(stimuli) == 2
    sample = {s.name: s for s in OSIEDataset(OSIE).samples}["1002"]
    mine = fixations[fixations.n == 1]
    shape = stimuli.sizes[1]
    rows, cols = fixated_pixels(sample.fixations, shape)
    assert set(zip(mine.y_int.tolist(), mine.x_int.tolist())) == set(zip(rows.tolist(), cols.tolist()))
    assert len(mine) == len(sample.fixations)  # pysaliency's convention: every fixation counts
    _, unique = load_osie(OSIE, names=["1001", "1002"], unique_pixels=True)
    one = unique[unique.n == 1]
    assert sorted(zip(one.y_int.tolist(), one.x_int.tolist())) == sorted(zip(rows.tolist(), cols.tolist()))


@needs_osie
@pytest.mark.slow
def test_pysaliency_metrics_agree_with_salicon_evaluate_on_osie():
    """pysaliency's AUC-Judd, NSS, CC and information gain of the shipped model on
    four OSIE test images agree with salicon evaluate's within 0.005, given the
    ground truth salicon evaluate scores (one fixation per fixated pixel; the
    full test split: benchmarks/pysaliency_agreement.py)."""
    from salicon.data import open_dataset
    from salicon.evaluate import evaluate, read_split

    names = read_split(ROOT / "splits" / "osie_test.txt")[:4]
    salicon = Salicon()  # the shipped model at the CPU default
    ours = evaluate(open_dataset(f"osie:{OSIE}"), lambda s: salicon.compute_saliency(s.image_path), names=names,
                    metrics=["AUC_Judd", "NSS", "CC", "IG"], baselines=False).summary()["salicon"]
    stimuli, fixations = load_osie(OSIE, names=names, unique_pixels=True)
    maps, density = SaliconSaliencyMapModel(salicon=salicon), SaliconModel(salicon=salicon)
    theirs = {"AUC_Judd": maps.AUC_Judd(stimuli, fixations), "NSS": maps.NSS(stimuli, fixations, average="image"),
              "CC": maps.CC(stimuli, fixation_map_model(stimuli, fixations)),
              "IG": density.information_gain(stimuli, fixations, baseline_model=CenterBiasModel(),
                                             average="image")}
    for metric, value in theirs.items():
        assert abs(ours[metric]["mean"] - value) <= 0.005, (metric, ours[metric]["mean"], value)
