"""salicon.batch and `salicon predict --ray`: input listing (folders, globs,
lists, URIs), outputs equal to single-process predict, resume, an actor
killed mid-run, bad images, Parquet shards. Runs on a local 2-CPU Ray
instance with the small net (120x160 / 60x80), plus one full-size test."""
from __future__ import annotations

import csv
import io
import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from salicon import cli
from salicon.batch import predict_on_ray
from salicon.inputs import Item, list_inputs
from salicon.model import Salicon
from salicon.outputs import OutputSpec

ray = pytest.importorskip("ray", reason="Ray is not installed: pip install -e '.[ray]'")
pytest.importorskip("ray.data", reason="Ray Data is not installed: pip install -e '.[ray]'")
pq = pytest.importorskip("pyarrow.parquet", reason="pyarrow is not installed: pip install -e '.[ray]'")


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray instance (2 CPUs) for the module; the jobs join it. The
    dashboard serves the state API that finds actor PIDs (ray[default])."""
    if not ray.is_initialized():
        context = ray.init(address="local", num_cpus=2, include_dashboard=True, logging_level="WARNING",
                           log_to_driver=False)
        _STATE_API.append(f"http://{context.dashboard_url}")
    yield
    ray.shutdown()


def _write_images(folder: Path, count: int, seed: int = 0, nested: bool = True) -> list[Path]:
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(count):
        sub = folder / (f"set{i % 3}" if nested else "")
        sub.mkdir(parents=True, exist_ok=True)
        h, w = int(rng.integers(40, 90)), int(rng.integers(40, 120))
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        path = sub / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(img).save(path, quality=95)
        paths.append(path)
    return paths


def _maps(folder: Path, suffix: str = ".npy") -> dict[str, np.ndarray]:
    return {p.relative_to(folder).as_posix(): np.load(p) for p in sorted(folder.rglob(f"*{suffix}"))}


def _manifest(path: Path) -> list[dict]:
    with open(path / "manifest.csv", newline="") as fh:
        return list(csv.DictReader(fh))


# -------------------------------------------------------------- listing


def test_list_inputs_folders_globs_lists_and_uris(tmp_path):
    images = _write_images(tmp_path / "photos", 6)
    (tmp_path / "photos" / "notes.txt").write_text("not listed: not an image suffix")
    items, problems = list_inputs([str(tmp_path / "photos")], recursive=True)
    assert problems == [] and len(items) == 6
    assert {it.stem for it in items} == {p.relative_to(tmp_path / "photos").with_suffix("").as_posix()
                                          for p in images}
    assert list_inputs([str(tmp_path / "photos")])[0] == []  # images are in sub-folders: -r needed

    globbed, _ = list_inputs([str(tmp_path / "photos" / "*" / "*.png")])
    assert sorted(Path(it.source).name for it in globbed) == sorted(p.name for p in images if p.suffix == ".png")

    listing = tmp_path / "photos" / "list.txt"
    listing.write_text("# comment\nset0/img000.jpg\n\n" + str(images[1]) + "\n")
    listed, _ = list_inputs([str(listing)])
    assert [it.stem for it in listed] == ["set0/img000", "set1/img001"]

    table = tmp_path / "list.csv"
    table.write_text("id,path\n1," + str(images[2]) + "\n2," + str(images[3]) + "\n")
    assert [Path(it.source) for it in list_inputs([str(table)])[0]] == images[2:4]

    import pyarrow as pa
    pq.write_table(pa.table({"path": [str(p) for p in images[:4]], "label": list("abcd")}),
                   tmp_path / "list.parquet")
    assert [Path(it.source) for it in list_inputs([str(tmp_path / "list.parquet")])[0]] == images[:4]

    uri_items, _ = list_inputs([f"file://{tmp_path / 'photos'}"], recursive=True)
    assert sorted(it.stem for it in uri_items) == sorted(it.stem for it in items)
    assert all(it.source.startswith("file://") for it in uri_items)

    none, problems = list_inputs([str(tmp_path / "missing"), f"file://{tmp_path}/missing_too"])
    assert none == [] and len(problems) == 2 and "no such file or folder" in problems[0]


def test_unique_stems_keep_suffixes(tmp_path):
    a = tmp_path / "x.jpg"
    b = tmp_path / "x.png"
    for p in (a, b):
        Image.new("RGB", (8, 8)).save(p)
    items, _ = list_inputs([str(a), str(b)])
    assert [it.stem for it in items] == ["x.jpg", "x.png"]


def test_ray_address_is_told_from_an_input():
    assert cli._join_negative_values(["predict", "--ray", "photos/", "-o", "m"]) == \
        ["predict", "--ray=local", "photos/", "-o", "m"]
    assert cli._join_negative_values(["predict", "p", "--ray", "auto"]) == ["predict", "p", "--ray", "auto"]
    assert cli._join_negative_values(["predict", "p", "--ray", "ray://head:10001"])[-1] == "ray://head:10001"
    args = cli.build_parser().parse_args(cli._join_negative_values(["predict", "a.jpg", "-o", "m", "--ray"]))
    assert args.ray == "local"


def test_ray_options_need_ray(tmp_path, capsys):
    img = _write_images(tmp_path, 1, nested=False)[0]
    assert cli.main(["predict", str(img), "-o", str(tmp_path / "o"), "--store", "parquet"]) == 2
    assert "--store applies to --ray jobs only" in capsys.readouterr().err


def test_missing_ray_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys
    monkeypatch.setitem(sys.modules, "ray", None)
    img = _write_images(tmp_path, 1, nested=False)[0]
    assert cli.main(["predict", str(img), "-o", str(tmp_path / "o"), "--ray"]) == 1
    assert 'pip install -e ".[ray]"' in capsys.readouterr().err


# ----------------------------------------------------------------- jobs


@pytest.mark.slow
def test_ray_maps_equal_predict_on_a_200_image_folder(ray_cluster, tmp_path, small_model, small_prototxt):
    photos = tmp_path / "photos"
    _write_images(photos, 200)
    common = ["--model", str(small_model), "--prototxt", str(small_prototxt), "--npy", "-r", "-q",
              "--device", "cpu"]
    assert cli.main(["predict", str(photos), "-o", str(tmp_path / "single"), *common]) == 0
    assert cli.main(["predict", str(photos), "-o", str(tmp_path / "ray"), "--ray",
                     *common]) == 0
    single, distributed = _maps(tmp_path / "single"), _maps(tmp_path / "ray")
    assert len(single) == 200 and single.keys() == distributed.keys()
    assert max(np.abs(single[k] - distributed[k]).max() for k in single) <= 1e-6
    pngs = {p.relative_to(tmp_path / "ray").as_posix() for p in (tmp_path / "ray").rglob("*.png")}
    assert pngs == {p.relative_to(tmp_path / "single").as_posix() for p in (tmp_path / "single").rglob("*.png")}
    rows = _manifest(tmp_path / "ray")
    assert len(rows) == 200 and {r["status"] for r in rows} == {"written"}


def test_rerun_does_no_work_and_resume_completes(ray_cluster, tmp_path, small_model, small_prototxt):
    photos = tmp_path / "photos"
    _write_images(photos, 12, nested=False)
    items, _ = list_inputs([str(photos)])
    out = tmp_path / "maps"
    run = dict(model_path=small_model, prototxt=small_prototxt, device="cpu", spec=OutputSpec(npy=True),
               progress=False)
    first = predict_on_ray(items, str(out), **run)
    assert first.written == 12 and first.ok
    reference = _maps(out)
    # A partial run: some outputs are gone (as if the job had stopped before them).
    for stem in ("img003", "img007"):
        (out / f"{stem}.png").unlink()
    (out / "img010.npy").unlink()
    stamps = {p.name: p.stat().st_mtime_ns for p in out.glob("*.png") if p.stem != "img010"}
    second = predict_on_ray(items, str(out), **run)
    assert (second.written, second.skipped) == (3, 9)
    assert all((out / n).stat().st_mtime_ns == t for n, t in stamps.items())  # done images untouched
    resumed = _maps(out)
    assert max(np.abs(resumed[k] - reference[k]).max() for k in reference) == 0
    third = predict_on_ray(items, str(out), **run)
    assert (third.written, third.skipped, third.actors) == (0, 12, 0)  # nothing to do: no cluster work
    assert {r["status"] for r in _manifest(out)} == {"done before"}


def test_bad_images_are_recorded_and_the_others_finish(ray_cluster, tmp_path, small_model, small_prototxt,
                                                       capsys):
    photos = tmp_path / "photos"
    _write_images(photos, 5, nested=False)
    (photos / "notes.jpg").write_text("these are notes")
    good = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(good, format="PNG")
    (photos / "cut.png").write_bytes(good.getvalue()[:60])
    out = tmp_path / "maps"
    code = cli.main(["predict", str(photos), "-o", str(out), "--ray", "--model", str(small_model),
                     "--prototxt", str(small_prototxt), "--device", "cpu"])
    assert code == 1
    err = capsys.readouterr().err
    assert "notes.jpg: not an image file" in err and "5 written, 0 already done, 2 failed of 7" in err
    rows = {Path(r["input"]).name: r for r in _manifest(out)}
    assert rows["notes.jpg"]["status"] == "failed" and "not an image file" in rows["notes.jpg"]["message"]
    assert rows["cut.png"]["status"] == "failed" and "cut.png" in rows["cut.png"]["message"]
    assert len(list(out.glob("*.png"))) == 5


def test_parquet_shards_and_file_uris(ray_cluster, tmp_path, small_model, small_prototxt):
    photos = tmp_path / "photos"
    paths = _write_images(photos, 9)
    listing = tmp_path / "inputs.parquet"
    import pyarrow as pa
    pq.write_table(pa.table({"path": [f"file://{p}" for p in paths]}), listing)
    items, problems = list_inputs([f"file://{listing}"])
    assert problems == [] and len(items) == 9
    out = tmp_path / "out"
    model = Salicon(small_model, small_prototxt, device="cpu")
    for encoding in ("png", "float16"):
        target = out / encoding
        report = predict_on_ray(items, f"file://{target}", model_path=small_model, prototxt=small_prototxt,
                                device="cpu", batch_size=2, progress=False,
                                spec=OutputSpec(store="both", parquet_map=encoding))
        assert report.written == 9 and report.ok
        table = pq.read_table(target / "shards")
        assert sorted(table.column("name").to_pylist()) == sorted(it.stem for it in items)
        for row in table.to_pylist():
            expected = model.compute_saliency(row["source"][len("file://"):])
            assert (row["height"], row["width"]) == expected.shape
            if encoding == "png":
                got = np.asarray(Image.open(io.BytesIO(row["map"])))
                assert np.array_equal(got, np.asarray(Image.open(target / f"{row['name']}.png")))
                # PNG rounding, plus float32 noise of a batch of 2 against one image (about 1e-6)
                assert np.abs(got / 255.0 - expected).max() <= 0.5 / 255 + 1e-5
            else:
                got = np.frombuffer(row["map"], np.float16).reshape(expected.shape)
                assert np.abs(got.astype(np.float32) - expected).max() <= 1e-3
        # A rerun finds every image in the shards and adds none.
        shards = sorted((target / "shards").glob("*.parquet"))
        again = predict_on_ray(items, f"file://{target}", model_path=small_model, prototxt=small_prototxt,
                               device="cpu", progress=False, spec=OutputSpec(store="both", parquet_map=encoding))
        assert again.written == 0 and sorted((target / "shards").glob("*.parquet")) == shards
        assert pq.read_table(target / "shards").num_rows == 9


#: The state API's address (this module's cluster's dashboard), named so that a
#: cluster left behind by `ray start` elsewhere on the machine is never asked.
_STATE_API: list[str] = []


def _net_actor_pids() -> list[int]:
    from ray.util.state import list_actors

    actors = list_actors(address=_STATE_API[-1], filters=[("state", "=", "ALIVE")], detail=True)
    return [a.pid for a in actors if "NetActor" in (a.class_name or "") and a.pid]


def test_actor_killed_mid_run_gives_complete_and_correct_output(ray_cluster, tmp_path, small_model,
                                                               small_prototxt):
    photos = tmp_path / "photos"
    _write_images(photos, 240)
    items, _ = list_inputs([str(photos)], recursive=True)
    out = tmp_path / "maps"
    result: dict = {}

    def job():
        result["report"] = predict_on_ray(items, str(out), model_path=small_model, prototxt=small_prototxt,
                                          device="cpu", spec=OutputSpec(npy=True), progress=False)

    thread = threading.Thread(target=job)
    thread.start()
    killed = None
    deadline = time.time() + 300
    while time.time() < deadline and thread.is_alive():
        done = len(list(out.rglob("*.png"))) if out.exists() else 0
        pids = _net_actor_pids() if done >= 20 else []
        if pids:
            killed, done_at_kill = pids[0], done
            os.kill(killed, signal.SIGKILL)
            break
        time.sleep(0.2)
    thread.join(timeout=600)
    assert killed is not None, "the job ended before an actor could be killed"
    assert done_at_kill < 240  # killed mid-run, with work left for the restarted actor
    report = result["report"]
    assert report.ok and report.written == 240
    model = Salicon(small_model, small_prototxt, device="cpu")
    for it in items[::7]:
        got = np.load(out / f"{it.stem}.npy")
        assert np.abs(got - model.compute_saliency(it.source)).max() <= 1e-6
    assert len(_maps(out)) == 240


@pytest.mark.slow
def test_full_size_net_on_ray_equals_compute_saliency(ray_cluster, tmp_path):
    examples = Path(__file__).resolve().parent.parent / "examples"
    items = [Item(str(p), p.stem) for p in sorted(examples.glob("*.jpg"))[:2]]
    report = predict_on_ray(items, str(tmp_path), device="cpu", spec=OutputSpec(npy=True), progress=False)
    assert report.ok and report.written == 2
    model = Salicon(device="cpu")
    for it in items:
        assert np.abs(np.load(tmp_path / f"{it.stem}.npy") - model.compute_saliency(it.source)).max() <= 1e-6


def test_joins_an_existing_cluster_by_address(tmp_path, small_model, small_prototxt):
    """`ray start --head` in its own processes, the job in another, --ray HOST:PORT."""
    import subprocess
    import sys

    from tests.test_serve import _free_port

    ray_cli = Path(sys.executable).parent / "ray"
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed beside this Python")
    port = _free_port()
    env = {**os.environ, "RAY_enable_metrics_collection": "0"}
    # --block keeps `ray start` in the foreground: stopping its process group stops this
    # cluster alone (`ray stop` would stop every Ray instance on the machine).
    head = subprocess.Popen([str(ray_cli), "start", "--head", f"--port={port}", "--num-cpus=2",
                             "--include-dashboard=false", "--disable-usage-stats", "--block"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    try:
        import socket
        deadline = time.time() + 120
        while time.time() < deadline:
            assert head.poll() is None, head.stderr.read()
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        photos = tmp_path / "photos"
        _write_images(photos, 6, nested=False)
        out = tmp_path / "maps"
        # Relative paths from another working directory than the cluster's workers have.
        job = subprocess.run([sys.executable, "-m", "salicon", "predict", "photos", "-o", "maps", "--ray",
                              f"127.0.0.1:{port}", "--model", str(small_model), "--prototxt", str(small_prototxt),
                              "--npy", "--device", "cpu"], capture_output=True, text=True, timeout=300, env=env,
                             cwd=tmp_path)
        assert job.returncode == 0, job.stderr
        assert "6 written, 0 already done, 0 failed of 6" in job.stderr
        model = Salicon(small_model, small_prototxt, device="cpu")
        for path in sorted(photos.iterdir()):
            assert np.abs(np.load(out / f"{path.stem}.npy") - model.compute_saliency(path)).max() <= 1e-6
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
            head.wait(timeout=30)
        current = Path("/tmp/ray/ray_current_cluster")  # Ray's pointer to the last `ray start` cluster
        if current.exists() and current.read_text().strip().endswith(f":{port}"):
            current.unlink()
