"""The ``salicon`` command: predict over files and folders, bad files, outputs."""
from __future__ import annotations

import re
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from salicon.cli import main
from salicon.pretrained import PROJECT_ROOT


@pytest.fixture
def images(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((30, 40, 3)) * 255).astype(np.uint8)).save(folder / "a.jpg")
    Image.fromarray((rng.random((25, 35)) * 255).astype(np.uint8)).save(folder / "b.png")
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (folder / "readme.txt").write_text("not an image, and not picked up from the folder")
    return folder


def _predict(args, small_model, small_prototxt):
    return main(["predict", *map(str, args), "--model", str(small_model), "--prototxt", str(small_prototxt),
                 "--device", "cpu", "-q"])


def test_predict_folder_reports_bad_file_and_finishes_others(images, tmp_path, small_model, small_prototxt, capsys):
    out = tmp_path / "out"
    code = _predict([images, "-o", out, "--npy", "--overlay"], small_model, small_prototxt)
    assert code == 1
    err = capsys.readouterr().err
    assert "broken.png" in err
    a = np.asarray(Image.open(out / "a.png"))
    assert a.shape == (30, 40) and a.dtype == np.uint8 and a.max() == 255
    assert np.asarray(Image.open(out / "b.png")).shape == (25, 35)
    assert np.asarray(Image.open(out / "a_overlay.png")).shape == (30, 40, 3)
    npy = np.load(out / "a.npy")
    assert npy.dtype == np.float32 and npy.shape == (30, 40)
    np.testing.assert_array_equal(np.round(npy * 255).astype(np.uint8), a)
    assert not (out / "broken.png").exists()
    assert sorted(p.name for p in out.iterdir()) == ["a.npy", "a.png", "a_overlay.png", "b.npy", "b.png",
                                                     "b_overlay.png"]


def test_predict_good_files_exit_zero_with_threshold(images, tmp_path, small_model, small_prototxt):
    out = tmp_path / "out"
    code = _predict([images / "a.jpg", "-o", out, "--threshold", "0.5", "--npy"], small_model, small_prototxt)
    assert code == 0
    sal = np.load(out / "a.npy")
    assert (sal[(sal > 0)] >= 0.5).all() and (sal == 0).any()


def test_predict_never_overwrites_inputs(images, small_model, small_prototxt, capsys):
    before = (images / "b.png").read_bytes()
    code = _predict([images / "b.png", "-o", images], small_model, small_prototxt)
    assert code == 1
    assert "overwrite" in capsys.readouterr().err
    assert (images / "b.png").read_bytes() == before


def test_predict_name_collisions_and_missing_inputs(tmp_path, small_model, small_prototxt, capsys):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (20, 20), (200, 10, 10)).save(src / "x.jpg")
    Image.new("RGB", (20, 20), (10, 10, 200)).save(src / "x.png")
    out = tmp_path / "out"
    code = _predict([src / "x.jpg", src / "x.png", tmp_path / "nope.jpg", "-o", out], small_model, small_prototxt)
    assert code == 1
    assert "nope.jpg: no such file" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png.png"]


def test_predict_bad_model_is_one_clear_error(images, tmp_path, small_prototxt, capsys):
    bad = tmp_path / "bad.caffemodel"
    bad.write_bytes(b"\x00\x01garbage" * 10)
    code = main(["predict", str(images), "-o", str(tmp_path / "o"), "--model", str(bad),
                 "--prototxt", str(small_prototxt), "-q"])
    assert code == 1
    err = capsys.readouterr().err
    assert "bad.caffemodel" in err and "Traceback" not in err


def test_help_and_usage_errors():
    result = subprocess.run([sys.executable, "-m", "salicon", "predict", "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "--overlay" in result.stdout and "--threshold" in result.stdout
    result = subprocess.run([sys.executable, "-m", "salicon"], capture_output=True, text=True)
    assert result.returncode == 2 and "predict" in result.stderr
    result = subprocess.run([sys.executable, "-m", "salicon", "frobnicate"], capture_output=True, text=True)
    assert result.returncode == 2 and "invalid choice" in result.stderr


@pytest.mark.slow
def test_quick_start_predicts_with_the_shipped_model(tmp_path):
    """The README's quick start: no --model, an example image, map and overlay."""
    from .conftest import ROOT
    out = tmp_path / "maps"
    assert main(["predict", str(ROOT / "examples" / "astronaut.jpg"), "-o", str(out), "--overlay", "-q"]) == 0
    sal = np.asarray(Image.open(out / "astronaut.png"))
    assert sal.shape == (512, 512) and sal.max() == 255 and sal.min() == 0
    assert np.asarray(Image.open(out / "astronaut_overlay.png")).shape == (512, 512, 3)


# ------------------------------------------- usage errors and early checks


def test_bad_counts_and_durations_are_usage_errors_of_their_subcommand(capsys):
    cases = [(["predict", "x.jpg", "-o", "out", "--batch-size", "0"], "salicon predict: error: argument --batch-size"),
             (["train", "--data", "d", "--out", "o", "--max-iter", "-3"], "--max-iter: must be at least 1, got -3"),
             (["train", "--data", "d", "--out", "o", "--max-iter", "0"], "--max-iter: must be at least 1"),
             (["train", "--data", "d", "--out", "o", "--time-limit", "-5m"], "duration must be positive, got '-5m'"),
             (["train", "--data", "d", "--out", "o", "--time-limit", "0"], "duration must be positive"),
             (["train", "--data", "d", "--out", "o", "--workers", "0"], "--workers: must be at least 1"),
             (["evaluate", "--dataset", "d", "--limit", "-1"], "--limit: must be at least 1"),
             (["predict", "x.jpg", "-o", "out", "--max-pixels", "lots"], "--max-pixels: expected a pixel count")]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert expected in err, (argv, err)
        assert f"usage: salicon {argv[0]}" in err  # the subcommand's usage, not the top level's


def test_help_shows_no_doubled_or_empty_defaults(capsys):
    for command in ("predict", "train", "evaluate", "init-weights", "export-onnx", "export-caffemodel"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        text = " ".join(capsys.readouterr().out.split())
        assert "(default: None)" not in text and "(default: False)" not in text
        assert text.count("(default: the shipped pretrained model") <= 1
        assert not re.search(r"\(default:[^)]*\) \(default:", text), command


def test_predict_into_an_existing_file_fails_before_any_work(tmp_path, monkeypatch, capsys):
    target = tmp_path / "good.jpg"
    Image.new("RGB", (20, 20)).save(target)
    before = target.read_bytes()
    monkeypatch.setattr("salicon.model.Salicon.__init__", lambda *a, **k: pytest.fail("the model was loaded"))
    assert main(["predict", str(target), "-o", str(target), "-q"]) == 1
    assert "exists and is not a folder" in capsys.readouterr().err
    assert target.read_bytes() == before


def test_predict_all_failed_says_so_and_creates_no_folder(tmp_path, small_model, small_prototxt, capsys):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not a png")
    out = tmp_path / "never"
    assert main(["predict", str(bad), "-o", str(out), "--model", str(small_model), "--prototxt",
                 str(small_prototxt), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "no saliency maps written" in err and "wrote 0" not in err
    assert not out.exists()


def test_no_model_message_speaks_cli(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr("salicon.pretrained.default_model_path", lambda: tmp_path / "absent.safetensors")
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "-q"]) == 1
    err = capsys.readouterr().err
    assert "model=PATH" not in err and "shipped pretrained model is missing" in err


def test_huge_images_are_refused_with_the_projects_own_message(tmp_path, small_model, small_prototxt, capsys):
    big = tmp_path / "big.png"
    _png_header_only(big, 20000, 20000)
    good = tmp_path / "good.png"
    Image.new("RGB", (40, 30), "gray").save(good)
    out = tmp_path / "out"
    assert main(["predict", str(big), str(good), "-o", str(out), "--model", str(small_model), "--prototxt",
                 str(small_prototxt), "--device", "cpu", "-q"]) == 1
    err = capsys.readouterr().err
    assert "400.0 megapixels exceeds the limit of 179.0 megapixels" in err and "--max-pixels" in err
    assert "DecompressionBomb" not in err
    assert (out / "good.png").exists()
    # a lower limit refuses smaller images too
    assert main(["predict", str(good), "-o", str(out), "--model", str(small_model), "--prototxt",
                 str(small_prototxt), "--device", "cpu", "-q", "--max-pixels", "1000"]) == 1
    assert "40x30 pixels (1200 pixels) exceeds the limit of 1000 pixels" in capsys.readouterr().err


def _png_header_only(path, width, height):
    """A PNG whose header claims width x height (its pixel data is absent)."""
    import struct
    import zlib
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))


def test_same_stem_inputs_keep_their_extension(tmp_path, small_model, small_prototxt):
    folder = tmp_path / "in"
    folder.mkdir()
    Image.new("RGB", (20, 20), "red").save(folder / "x.jpg")
    Image.new("RGB", (20, 20), "blue").save(folder / "x.png")
    Image.new("RGB", (20, 20), "blue").save(folder / "y.png")
    out = tmp_path / "out"
    assert _predict([folder, "-o", out], small_model, small_prototxt) == 0
    assert sorted(p.name for p in out.iterdir()) == ["x.jpg.png", "x.png.png", "y.png"]
    from .conftest import ROOT
    assert "`x.jpg.png`, `x.png.png`" in (ROOT / "docs" / "guides" / "command-line.md").read_text()  # documented


def test_init_weights_refuses_to_overwrite_other_files(tmp_path, capsys):
    victim = tmp_path / "photo.jpg"
    victim.write_bytes(b"precious")
    assert main(["init-weights", "--vgg16", str(tmp_path / "vgg.caffemodel"), "-o", str(victim)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert victim.read_bytes() == b"precious"


@pytest.mark.slow
def test_large_image_memory_stays_near_the_images_own_size(tmp_path, small_model, small_prototxt):
    """A 36-megapixel PNG with --overlay --npy: peak RSS far below the 100+ bytes a
    pixel of whole-image float copies (about 9 bytes a pixel: the 8-bit image,
    the float32 map and the 8-bit outputs)."""
    h, w = 6000, 6000
    ramp = np.linspace(0, 255, w, dtype=np.float32)
    rgb = np.empty((h, w, 3), np.uint8)
    rgb[...] = ramp.astype(np.uint8)[None, :, None]
    rgb[::7, :, 1] = 255
    Image.fromarray(rgb).save(tmp_path / "big.png", compress_level=1)
    del rgb
    out = tmp_path / "out"
    code = (f"import resource, sys; from salicon.cli import main; "
            f"rc = main(['predict', {str(tmp_path / 'big.png')!r}, '-o', {str(out)!r}, '--overlay', '--npy', "
            f"'--model', {str(small_model)!r}, '--prototxt', {str(small_prototxt)!r}, '--device', 'cpu', '-q']); "
            f"print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)")
    baseline = subprocess.run([sys.executable, "-c", "import resource, salicon.cli, torch; "
                               "print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)"],
                              capture_output=True, text=True, check=True)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    extra_mb = (int(result.stdout.split()[-1]) - int(baseline.stdout.split()[-1])) / 1024
    assert extra_mb < 20 * h * w / 2 ** 20, f"{extra_mb:.0f} MB above the bare process for {h * w / 1e6:.0f} MP"
    assert np.load(out / "big.npy").shape == (h, w)
    assert Image.open(out / "big_overlay.png").size == (w, h)


# ------------------------------------------------- what a new user trips on


def _no_model(monkeypatch):
    monkeypatch.setattr("salicon.model.Salicon.__init__", lambda *a, **k: pytest.fail("the model was loaded"))


def test_max_pixels_zero_is_an_error_and_none_lifts_the_limit(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["predict", "x.jpg", "-o", "out", "--max-pixels", "0"])
    assert exit_info.value.code == 2
    assert "--max-pixels: must be at least 1 pixel, got 0 ('none' lifts the limit)" in capsys.readouterr().err
    from salicon.cli import build_parser
    assert build_parser().parse_args(["predict", "x.jpg", "-o", "o", "--max-pixels", "none"]).max_pixels is None


def test_a_file_that_is_not_safetensors_is_named_as_such(tmp_path, small_prototxt, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    for name, data in (("notes.safetensors", b"these are my notes\n"), ("random.safetensors", bytes(range(256)) * 8)):
        (tmp_path / name).write_bytes(data)
        assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(tmp_path / name),
                     "--prototxt", str(small_prototxt), "-q"]) == 1
        err = capsys.readouterr().err
        assert f"{name}: not a safetensors file" in err and "caffemodel" not in err, err


def test_an_output_folder_that_cannot_be_written_fails_before_any_work(tmp_path, monkeypatch, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    _no_model(monkeypatch)
    assert main(["predict", str(tmp_path / "a.png"), "-o", "/proc/salicon-maps", "-q"]) == 1
    err = capsys.readouterr().err
    assert "-o /proc/salicon-maps: cannot write outputs there" in err and "a.png" not in err


def test_outputs_that_would_overwrite_inputs_are_refused_before_any_work(tmp_path, monkeypatch, capsys):
    pngs = tmp_path / "pngs"
    pngs.mkdir()
    for name in ("a.png", "b.png"):
        Image.new("RGB", (20, 20)).save(pngs / name)
    before = {p.name: p.read_bytes() for p in pngs.iterdir()}
    _no_model(monkeypatch)
    assert main(["predict", str(pngs), "-o", str(pngs), "-q"]) == 1
    err = capsys.readouterr().err
    assert "would overwrite the input image" in err and "(and 1 other)" in err and "choose another -o" in err
    assert {p.name: p.read_bytes() for p in pngs.iterdir()} == before


def test_a_full_disk_is_reported_per_output_kind(images, tmp_path, small_model, small_prototxt, monkeypatch,
                                                 capsys):
    import errno

    from salicon import outputs
    real = outputs.atomic_write_bytes

    def full_for_overlays(path, data):
        if str(path).endswith("_overlay.png"):
            raise OSError(errno.ENOSPC, "No space left on device")
        real(path, data)
    monkeypatch.setattr(outputs, "atomic_write_bytes", full_for_overlays)
    (images / "broken.png").unlink()
    out = tmp_path / "out"
    assert main(["predict", str(images), "-o", str(out), "--overlay", "--model", str(small_model), "--prototxt",
                 str(small_prototxt), "--device", "cpu"]) == 1
    err = capsys.readouterr().err
    assert "cannot write output" in err and "a_overlay.png (No space left on device)" in err
    assert f"wrote 2 saliency maps to {out} (0 overlays); 2 failed" in err
    assert "no saliency maps written" not in err
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png"]


def test_one_output_option_everywhere_and_usage_errors_exit_2(capsys):
    from salicon.cli import build_parser
    parser = build_parser()
    for argv in (["predict", "x.jpg"], ["train", "--data", "d"], ["evaluate", "--dataset", "d"],
                 ["export-onnx"], ["export-caffemodel"], ["init-weights", "--vgg16", "v.caffemodel"]):
        for option in ("-o", "--out", "--output"):
            assert parser.parse_args([*argv, option, "target"]).out == "target", (argv, option)
    cases = [(["predict", "x.jpg", "-o", "o", "--postprocess", "blur=-1"], "argument --postprocess: blur must be"),
             (["predict", "x.jpg", "-o", "o", "--device", "tpu"], "argument --device: invalid device 'tpu'"),
             (["evaluate", "--dataset", "d", "--postprocess", "prior=nonsense"], "argument --postprocess: unknown"),
             (["serve", "--port", "0"], "argument --port: must be at least 1, got 0"),
             (["serve", "--port", "70000"], "argument --port: must be at most 65535, got 70000")]
    for argv, expected in cases:
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2, argv
        err = capsys.readouterr().err
        assert expected in err, (argv, err)


def test_help_shows_durations_seeds_and_pixel_limits_as_written(capsys):
    texts = {}
    for command in ("train", "evaluate", "predict", "serve"):
        with pytest.raises(SystemExit):
            main([command, "--help"])
        texts[command] = " ".join(capsys.readouterr().out.split())
    assert "(default: 2.5h)" in texts["train"] and "9000" not in texts["train"]
    assert "seed of the split, the image order and fillers (default: 0)" in texts["train"]
    assert "(default: 0)" in texts["evaluate"]
    assert "(default: 178956970 (179M), PIL's own limit)" in texts["predict"]
    assert "(default: 50000000 (50M), the server's limit)" in texts["serve"]
    assert ".caffemodel or .safetensors" in texts["train"]


def test_an_empty_file_is_called_empty(tmp_path, small_model, small_prototxt, capsys):
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert _predict([tmp_path / "empty.jpg", "-o", tmp_path / "o"], small_model, small_prototxt) == 1
    assert "empty.jpg: the file is empty (0 bytes), not an image" in capsys.readouterr().err


def test_counts_are_singular_for_one(tmp_path, small_model, small_prototxt, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--model", str(small_model),
                 "--prototxt", str(small_prototxt), "--device", "cpu"]) == 0
    err = capsys.readouterr().err
    assert f"wrote 1 saliency map to {tmp_path / 'o'}" in err and "map(s)" not in err


def test_ctrl_c_message_starts_on_its_own_line(monkeypatch, capsys):
    """The progress bar leaves its line open: the message must not be glued to it."""
    from salicon import cli

    def interrupted(args):
        raise KeyboardInterrupt
    parser = cli.build_parser()
    parser._subparsers._group_actions[0].choices["predict"].set_defaults(func=interrupted)
    monkeypatch.setattr(cli, "build_parser", lambda: parser)
    assert cli.main(["predict", "x.jpg", "-o", "o"]) == 130
    assert capsys.readouterr().err == "\nsalicon: error: interrupted\n"


def test_api_client_says_in_one_line_that_no_server_answers():
    from .conftest import ROOT
    from .test_serve import _free_port
    result = subprocess.run([sys.executable, str(ROOT / "examples" / "api_client.py"), "x.jpg", "--url",
                             f"http://127.0.0.1:{_free_port()}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "no salicon server answers" in result.stderr


@pytest.mark.parametrize("fmt", ["probability", "log-density"])
def test_a_density_format_with_minmax_normalisation_is_a_usage_error(fmt, tmp_path, small_model, small_prototxt,
                                                                    capsys):
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 30, 3), np.uint8)).save(image)
    out = tmp_path / "out"
    code = main(["predict", str(image), "-o", str(out), "--model", str(small_model), "--prototxt",
                 str(small_prototxt), "--format", fmt, "--postprocess", "blur=0.02, normalize = minmax"])
    err = capsys.readouterr().err
    assert code == 2 and f"--format {fmt} writes a probability map" in err and "normalize=minmax" in err
    assert not out.exists()


def test_int8_with_fast_runs_the_fast_models_int8_file_and_a_file_without_one_is_named(tmp_path, capsys):
    pytest.importorskip("openvino")
    image = tmp_path / "a.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)).save(image)
    assert main(["predict", str(image), "-o", str(tmp_path / "o"), "--fast", "--precision", "int8", "-v"]) == 0
    err = capsys.readouterr().err
    assert "salicon_osie_fast" in err and "precision int8" in err and (tmp_path / "o" / "a.png").exists()
    code = main(["predict", str(image), "-o", str(tmp_path / "p"), "--fast", "--model",
                 str(PROJECT_ROOT / "models" / "salicon_osie.safetensors"), "--precision", "int8"])
    assert code != 0 and "int8" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [["--runtime", "pytorch", "--precision", "int8"],
                                   ["--engine", "caffe", "--runtime", "openvino"],
                                   ["--decode", "processes", "--ray"]])
def test_combination_errors_print_the_usage_line_and_exit_2(extra, tmp_path, capsys):
    Image.new("RGB", (20, 20)).save(tmp_path / "a.png")
    assert main(["predict", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: salicon predict") and "salicon: error: --" in err


def test_a_closed_pipe_ends_quietly():
    """``salicon models | head -1``: the reader leaves early; no traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "models"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()
    proc.stdout.close()  # as head does after its line
    err = proc.stderr.read().decode()
    proc.wait(timeout=120)
    assert "Traceback" not in err and "BrokenPipeError" not in err, err
