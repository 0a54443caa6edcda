"""salicon.inputs: what users name, turned into images with unique output stems."""
from __future__ import annotations

from PIL import Image

from salicon.inputs import image_files, is_image_name, list_inputs, read_list, unique_stems


def test_unique_stems_keep_suffixes_then_number():
    assert unique_stems([("d/a.jpg", "a"), ("d/a.png", "a"), ("e/b.png", "b")]) == ["a.jpg", "a.png", "b"]
    assert unique_stems([("x/a.jpg", "a"), ("y/a.jpg", "a")]) == ["a.jpg", "a.jpg_2"]


def test_folders_lists_and_problems(tmp_path):
    for name in ("b.png", "a.jpg", "notes.txt", "sub/c.png"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        if name.endswith(".txt"):
            (tmp_path / name).write_text("a.jpg\n# comment\nsub/c.png\n")
        else:
            Image.new("RGB", (4, 4)).save(tmp_path / name)
    assert [p.name for p in image_files(tmp_path)] == ["a.jpg", "b.png"]
    assert [p.name for p in image_files(tmp_path, recursive=True)] == ["a.jpg", "b.png", "c.png"]
    assert read_list(str(tmp_path / "notes.txt")) == ["a.jpg", "sub/c.png"]
    items, problems = list_inputs([str(tmp_path / "notes.txt"), str(tmp_path / "empty_dir_missing")])
    assert [it.stem for it in items] == ["a", "sub/c"] and problems == [
        f"{tmp_path / 'empty_dir_missing'}: no such file or folder"]
    (tmp_path / "empty").mkdir()
    assert list_inputs([str(tmp_path / "empty")])[1] == [f"{tmp_path / 'empty'}: no images found"]
    assert is_image_name("X.JPEG") and not is_image_name("x.txt")
