"""salicon.pretrained: shipped files and the model record, its hash checked on load."""
from __future__ import annotations

import json
import shutil

import pytest

from salicon import Salicon
from salicon.errors import SaliconError
from salicon.pretrained import (
    ModelRecord,
    default_model_path,
    file_sha256,
    prototxt_path,
    read_record,
    record_path,
    shipped_file,
)


def test_shipped_files_are_found():
    assert default_model_path().is_file() and default_model_path().suffix == ".safetensors"
    assert prototxt_path().name == "salicon.prototxt" and prototxt_path("salicon_fast.prototxt").is_file()
    assert shipped_file("examples", "astronaut.jpg").is_file()
    with pytest.raises(SaliconError, match="shipped prototxt 'nope.prototxt' not found"):
        prototxt_path("nope.prototxt")


def test_the_shipped_record_describes_its_file_and_its_hash_matches():
    record = read_record(default_model_path())
    assert isinstance(record, ModelRecord) and record.name == "salicon_osie"
    assert record.describes(default_model_path()) and record.center_prior and record.postprocess
    assert record.sha256 == file_sha256(default_model_path())
    assert record.meta["test_scores"]["salicon_osie"]["NSS"] > 2


def test_a_replaced_weights_file_is_named_on_load(tmp_path, small_model, small_prototxt):
    model = tmp_path / "mine.caffemodel"
    shutil.copyfile(small_model, model)
    record = {"name": "mine", "weights": {"file": "mine.caffemodel", "sha256": file_sha256(small_model)}}
    record_path(model).write_text(json.dumps(record))
    Salicon(model, small_prototxt, device="cpu")  # the hash matches
    with open(model, "ab") as fh:
        fh.write(b"\0")  # the file changes under its record
    with pytest.raises(SaliconError, match=r"mine.caffemodel: SHA-256 .* does not match .* recorded in .*mine.json"):
        Salicon(model, small_prototxt, device="cpu")
    # A record copied beside another file (an exported model) gives its settings, not its hash.
    other = tmp_path / "other.caffemodel"
    shutil.copyfile(small_model, other)
    record_path(other).write_text(json.dumps(record))
    assert read_record(other).sha256 and not read_record(other).describes(other)
    Salicon(other, small_prototxt, device="cpu")


def test_a_broken_record_is_named(tmp_path, small_model):
    model = tmp_path / "m.caffemodel"
    shutil.copyfile(small_model, model)
    assert read_record(model) is None
    record_path(model).write_text("{not json")
    with pytest.raises(SaliconError, match=r"m.json: the model's record is not valid JSON"):
        read_record(model)
    record_path(model).write_text("[1, 2]")
    with pytest.raises(SaliconError, match="not a JSON object"):
        read_record(model)


def test_prototxt_keyword_and_its_opensalicon_name(small_model, small_prototxt):
    assert Salicon(small_model, prototxt=small_prototxt, device="cpu").prototxt_path == small_prototxt
    assert Salicon(small_model, prototxtpath=small_prototxt, device="cpu").prototxt_path == small_prototxt
    with pytest.raises(ValueError, match="not both"):
        Salicon(small_model, prototxt=small_prototxt, prototxtpath=small_prototxt)


def _model_distribution(root, name, weights, prototxt):
    """A model distribution as pip installs one: its package folder (record, weights,
    test net) and a .dist-info whose entry point (group salicon.models) names it."""
    package = root / f"pkg_{name}"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    shutil.copy(weights, package / f"{name}.caffemodel")
    shutil.copy(prototxt, package / "net.prototxt")
    record = {"name": name, "weights": {"file": f"{name}.caffemodel", "sha256": file_sha256(weights)},
              "architecture": {"prototxt": "net.prototxt"}}
    (package / f"{name}.json").write_text(json.dumps(record))
    info = root / f"salicon_model_{name}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: salicon-model-{name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[salicon.models]\n{name} = pkg_{name}\n")
    return package


def test_model_distributions_are_found_through_their_entry_points(tmp_path, monkeypatch, small_model,
                                                                  small_prototxt):
    from salicon.pretrained import model_folders, model_records, resolve_model
    package = _model_distribution(tmp_path, "tiny_net", small_model, small_prototxt)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert (package, "salicon-model-tiny_net") in model_folders()
    record = model_records()["tiny_net"]
    assert record.folder == package and record.distribution == "salicon-model-tiny_net"
    assert "salicon_osie" in model_records()  # the package's own model is still there
    spec = resolve_model("tiny_net")
    assert spec.weights == package / "tiny_net.caffemodel" and spec.prototxt == package / "net.prototxt"
    (package / "tiny_net.caffemodel").write_bytes(b"replaced")
    with pytest.raises(SaliconError, match="SHA-256 does not match the one recorded for model 'tiny_net'"):
        resolve_model("tiny_net")


def test_a_distribution_cannot_take_a_name_already_registered(tmp_path, monkeypatch, small_model, small_prototxt):
    from salicon.pretrained import default_model_path, model_records
    _model_distribution(tmp_path, "salicon_osie", small_model, small_prototxt)
    monkeypatch.syspath_prepend(str(tmp_path))
    assert model_records()["salicon_osie"].folder == default_model_path().parent


def test_the_fast_model_is_registered_with_its_files_and_hashes():
    from salicon.engine import Net
    from salicon.pretrained import model_records, resolve_model
    record = model_records()["salicon_osie_fast"]
    assert record.distribution == "salicon-model-osie-fast"
    spec = resolve_model("salicon_osie_fast")
    assert spec.weights.parent == record.folder and file_sha256(spec.weights) == record.sha256
    assert spec.prototxt == record.folder / "salicon_osie_fast.prototxt"
    int8 = record.derived_files["int8"]
    xml = record.folder / int8["file"]
    assert file_sha256(xml) == int8["sha256"] and file_sha256(xml.with_suffix(".bin")) == int8["bin_sha256"]
    assert int8["prototxt_sha256"] == file_sha256(spec.prototxt)
    net = Net(spec.prototxt)
    assert net.input_shapes["fine_scale"][2:] == (600, 800) and net.input_shapes["coarse_scale"][2:] == (300, 400)
    assert net.blob_shapes["saliency_map_out"][2:] == (38, 50)
    assert record.scores()["NSS"] > 2.0 and record.postprocess


def test_a_model_distribution_not_installed_says_how_to_install_it(monkeypatch):
    from salicon import pretrained
    records = pretrained.model_records()
    monkeypatch.setattr(pretrained, "model_records", lambda: {k: v for k, v in records.items()
                                                              if k != "salicon_osie_fast"})
    with pytest.raises(SaliconError, match="is not installed: it is the distribution salicon-model-osie-fast"):
        pretrained.resolve_model("salicon_osie_fast")
