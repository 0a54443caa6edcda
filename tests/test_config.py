"""SaliconConfig: one configuration from the command line to every worker; the
pixel limit (a count or None: no limit) honoured by every entry point."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from salicon.batch import RayOptions, decode_batch
from salicon.cli import build_parser
from salicon.cli.options import salicon_config
from salicon.config import SaliconConfig
from salicon.errors import ImageTooLargeError, OptionError
from salicon.model import Salicon


@pytest.fixture
def photo_400px(tmp_path):
    path = tmp_path / "p20x20.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (20, 20, 3), np.uint8)).save(path)
    return path


def _predict_args(*extra):
    return build_parser().parse_args(["predict", "x.jpg", "-o", "o", *extra])


def test_config_is_checked_when_made_and_names_the_option():
    for fields, option in (({"resize": "lanczos"}, "resize"), ({"decode": "gpus"}, "decode"),
                           ({"max_pixels": -3}, "max_pixels"), ({"input_scale": 0.0}, "input_scale"),
                           ({"python_layers": "some"}, "python_layers"), ({"variants": "warp"}, "variants"),
                           ({"runtime": "tpu"}, "runtime"), ({"precision": "fp8"}, "precision")):
        with pytest.raises(OptionError) as info:
            SaliconConfig(**fields)
        assert info.value.option == option, (fields, info.value.options)
    with pytest.raises(TypeError, match="unknown Salicon option"):
        SaliconConfig.from_options(colour="blue")


def test_the_command_line_builds_the_config_from_its_fields():
    config = salicon_config(_predict_args("--device", "cpu", "--precision", "fp32", "--resize", "bilinear",
                                          "--max-pixels", "none", "--variants", "fuse-relu"))
    assert (config.device, config.precision, config.resize, config.max_pixels, config.variants) == \
        ("cpu", "fp32", "bilinear", None, "fuse-relu")
    assert salicon_config(_predict_args("--fast")).model == "salicon_osie_fast"
    assert salicon_config(_predict_args("--fast", "--model", "mine.caffemodel")).prototxt.endswith(
        "salicon_fast.prototxt")
    assert salicon_config(_predict_args("--engine", "caffe")).runtime == "caffe"


def test_max_pixels_in_the_python_api(small_model, small_prototxt, photo_400px):
    assert Salicon(small_model, small_prototxt, device="cpu", max_pixels=None).compute_saliency(
        photo_400px).shape == (20, 20)
    limited = Salicon(small_model, small_prototxt, device="cpu", max_pixels=100)
    with pytest.raises(ImageTooLargeError) as info:
        limited.compute_saliency(photo_400px)
    assert (info.value.limit, info.value.size) == (100, (20, 20)) and "max_pixels=" in str(info.value)


@pytest.mark.parametrize("limit, refused", [("none", False), ("100", True), ("1000", False)])
def test_max_pixels_in_predict_and_predict_ray_decoding(limit, refused, small_model, small_prototxt, photo_400px):
    args = _predict_args("--model", str(small_model), "--prototxt", str(small_prototxt), "--device", "cpu",
                         "--max-pixels", limit)
    config = salicon_config(args)
    spec = Salicon(config=config).preprocess_spec()  # what predict's workers and --ray's decode tasks use
    options = RayOptions(config=config)
    assert spec.max_pixels == options.config.max_pixels == (None if limit == "none" else int(limit))
    rows = decode_batch({"index": np.array([0]), "source": np.array([str(photo_400px)], dtype=object),
                         "stem": np.array(["p"], dtype=object)}, spec)
    assert bool(rows["error"][0]) == refused
    if refused:
        assert "exceeds the limit of 100 pixels" in rows["error"][0]


@pytest.mark.parametrize("limit", [None, 100])
def test_max_pixels_in_serve_and_serve_ray(limit, small_model, small_prototxt, photo_400px):
    from salicon.serve import RequestError, SaliencyService
    from salicon.serve_ray import ServeOptions
    model = Salicon(small_model, small_prototxt, device="cpu", max_pixels=limit)
    service = SaliencyService(model, max_pixels=limit)
    assert ServeOptions(config=model.config, max_pixels=limit).max_pixels == limit  # each replica's service
    data = photo_400px.read_bytes()
    if limit is None:
        assert service.decode("p.png", data).shape == (20, 20, 3)
    else:
        with pytest.raises(RequestError) as info:
            service.decode("p.png", data)
        assert info.value.status == 413 and "the server's operator can raise it with salicon serve --max-pixels" \
            in str(info.value)
