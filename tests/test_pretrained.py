"""salicon.pretrained: shipped files and the model record, its hash checked on load."""
from __future__ import annotations

import json
import shutil

import pytest

from salicon import Salicon
from salicon.errors import SaliconError
from salicon.pretrained import (ModelRecord, default_model_path, file_sha256, prototxt_path, read_record,
                                record_path, shipped_file)


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
