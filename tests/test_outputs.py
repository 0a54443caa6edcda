"""salicon.outputs: atomic files, encodings, one image's files, counts, checks before work."""
from __future__ import annotations

import errno
import io

import numpy as np
import pytest
from PIL import Image

from salicon import outputs
from salicon.inputs import Item
from salicon.outputs import (
    OutputError,
    OutputSpec,
    OutputStore,
    WriteCounts,
    atomic_write,
    check_output_folder,
    find_clashes,
    npy_bytes,
    png_bytes,
    remove_empty_folders,
    write_map,
)
from salicon.visualize import to_uint8


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    target = tmp_path / "sub" / "f.bin"
    atomic_write(target, lambda tmp: open(tmp, "wb").write(b"old"))

    def fails(tmp):
        open(tmp, "wb").write(b"half")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(OSError):
        atomic_write(target, fails)
    assert target.read_bytes() == b"old" and sorted(p.name for p in target.parent.iterdir()) == ["f.bin"]


def test_encodings_round_trip():
    sal = np.random.default_rng(0).random((7, 9)).astype(np.float32)
    assert np.array_equal(np.load(io.BytesIO(npy_bytes(sal))), sal)
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png_bytes(to_uint8(sal))))), to_uint8(sal))


def test_spec_names_every_file_with_the_map_last():
    spec = OutputSpec(npy=True, overlay=True)
    assert spec.targets("a/b") == {"npy": "a/b.npy", "overlay": "a/b_overlay.png", "map": "a/b.png"}
    assert list(spec.targets("x"))[-1] == "map"
    assert OutputSpec(store="parquet").files("x") == []


def test_write_map_writes_each_kind_and_reports_the_ones_that_fail(tmp_path, monkeypatch):
    sal = np.linspace(0, 1, 12, dtype=np.float32).reshape(3, 4)
    rgb = np.zeros((3, 4, 3), np.uint8)
    spec = OutputSpec(npy=True, overlay=True, threshold=0.5)
    done = write_map(OutputStore(str(tmp_path)), "x", sal, spec, lambda: rgb)
    assert done.ok and done.written == ["npy", "overlay", "map"]
    assert np.array_equal(np.load(tmp_path / "x.npy"), np.where(sal >= 0.5, sal, 0))
    real = outputs.atomic_write_bytes
    monkeypatch.setattr(outputs, "atomic_write_bytes", lambda p, d: (_ for _ in ()).throw(
        OSError(errno.ENOSPC, "No space left on device")) if str(p).endswith(".npy") else real(p, d))
    partial = write_map(OutputStore(str(tmp_path / "full")), "y", sal, spec, lambda: rgb)
    assert partial.written == ["overlay", "map"] and list(partial.errors) == ["npy"]
    assert "cannot write output" in partial.message() and "y.npy (No space left on device)" in partial.message()


def test_counts_say_what_was_written_of_each_kind():
    counts = WriteCounts(["overlay", "map"])
    assert counts.summary("out") == "no saliency maps written: 0 inputs failed"
    counts.add(None)
    assert counts.summary("out") == "no saliency maps written: 1 input failed"
    for written in (["map"], ["overlay", "map"]):
        counts.add(outputs.MapWrite(written=written, errors={} if "overlay" in written else {"overlay": "full"}))
    assert counts.summary("out") == "wrote 2 saliency maps to out (1 overlay); 2 failed"
    single = WriteCounts(["map"])
    single.add(outputs.MapWrite(written=["map"]))
    assert single.summary("out") == "wrote 1 saliency map to out"


def test_output_folder_checks(tmp_path):
    created = check_output_folder(tmp_path / "a" / "b")
    assert created == [tmp_path / "a", tmp_path / "a" / "b"] and (tmp_path / "a" / "b").is_dir()
    remove_empty_folders(created)
    assert not (tmp_path / "a").exists()
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        check_output_folder(tmp_path / "file")
    with pytest.raises(OutputError, match="cannot write outputs there"):
        check_output_folder(tmp_path / "file" / "below")
    with pytest.raises(OutputError, match="cannot write outputs there"):
        check_output_folder("/proc/salicon-test")


def test_clashes_between_outputs_and_inputs(tmp_path):
    items = [Item(str(tmp_path / "a.png"), "a"), Item(str(tmp_path / "b.jpg"), "b")]
    assert find_clashes(items, str(tmp_path), OutputSpec()) == [(str(tmp_path / "a.png"), str(tmp_path / "a.png"))]
    assert find_clashes(items, str(tmp_path / "maps"), OutputSpec()) == []
    assert find_clashes(items, "s3://bucket/maps", OutputSpec()) == []


@pytest.mark.parametrize("fmt", ["probability", "log-density"])
def test_density_formats_write_one_float64_npy_per_image(tmp_path, fmt):
    rng = np.random.default_rng(2)
    sal = rng.random((30, 40)).astype(np.float32)
    spec = OutputSpec(format=fmt, overlay=True)
    assert spec.files("sub/x") == ["sub/x_overlay.png", "sub/x.npy"]
    result = write_map(OutputStore(str(tmp_path)), "sub/x", sal, spec, image=lambda: np.zeros((30, 40, 3), np.uint8))
    assert result.ok and result.map_png is None
    saved = np.load(tmp_path / "sub" / "x.npy")
    assert saved.dtype == np.float64 and saved.shape == sal.shape
    density = np.exp(saved) if fmt == "log-density" else saved
    assert density.sum() == pytest.approx(1.0, abs=1e-12)
    # proportional to the map, up to the small floor that keeps the log finite
    expected = sal.astype(np.float64) + 1e-6 * sal.mean(dtype=np.float64)
    np.testing.assert_allclose(density, expected / expected.sum(), rtol=1e-12)


@pytest.mark.parametrize("fields", [{"npy": True}, {"threshold": 0.5}, {"store": "parquet"}])
def test_density_formats_refuse_what_they_cannot_write(fields):
    with pytest.raises(ValueError, match="float64"):
        OutputSpec(format="log-density", **fields)
    with pytest.raises(ValueError, match="format must be one of"):
        OutputSpec(format="jpeg")


@pytest.mark.parametrize("shape, band", [((37, 53, 3), 5), ((37, 53), 37), ((1, 1, 3), 1), ((64, 7), 3)])
def test_png_from_bands_decodes_to_the_same_pixels(shape, band):
    from PIL import Image

    from salicon.outputs import png_bytes_from_bands
    rng = np.random.default_rng(sum(shape))
    smooth = np.cumsum(rng.integers(0, 4, shape), axis=0) % 256  # rows alike, as in photos
    pixels = np.where(rng.random(shape) < 0.2, rng.integers(0, 256, shape), smooth).astype(np.uint8)
    data = png_bytes_from_bands((pixels[r:r + band] for r in range(0, shape[0], band)), shape[0], shape[1],
                                3 if len(shape) == 3 else 1)
    back = Image.open(io.BytesIO(data))
    assert back.mode == ("RGB" if len(shape) == 3 else "L")
    np.testing.assert_array_equal(np.asarray(back), pixels)
    with pytest.raises(ValueError, match="held 1 rows, not"):
        png_bytes_from_bands([pixels[:1]], shape[0] + 1, shape[1], 3 if len(shape) == 3 else 1)


def test_huge_pictures_are_encoded_band_by_band_with_the_same_pixels(monkeypatch):
    from PIL import Image

    from salicon import outputs
    from salicon.visualize import overlay, to_uint8
    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (300, 170, 3), dtype=np.uint8)
    saliency_map = rng.random((300, 170)).astype(np.float32)
    whole = (outputs.overlay_png(image, saliency_map), outputs.OutputSpec().encode_map(saliency_map))
    monkeypatch.setattr(outputs, "STREAM_PIXELS", 1000)
    calls = []
    monkeypatch.setattr(outputs, "png_bytes", lambda *a, **k: calls.append(a))  # must not be used
    banded = (outputs.overlay_png(image, saliency_map), outputs.OutputSpec().encode_map(saliency_map))
    assert not calls
    for a, b, expected in zip(whole, banded, (overlay(image, saliency_map), to_uint8(saliency_map))):
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(a))), expected)
        np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(b))), expected)


def test_npy_parts_are_the_npy_file_without_a_copy(tmp_path):
    from salicon.outputs import npy_bytes, npy_parts
    saliency_map = np.random.default_rng(0).random((37, 53)).astype(np.float32)
    parts = npy_parts(saliency_map)
    assert b"".join(bytes(p) for p in parts) == npy_bytes(saliency_map)
    assert np.shares_memory(np.frombuffer(parts[1], np.float32), saliency_map)  # the map's own memory
    store = OutputStore(str(tmp_path))
    store.write("m.npy", parts)
    np.testing.assert_array_equal(np.load(tmp_path / "m.npy"), saliency_map)
    np.testing.assert_array_equal(np.load(io.BytesIO(b"".join(bytes(p) for p in npy_parts(np.ones((2, 3)))))),
                                  np.ones((2, 3), np.float32))
