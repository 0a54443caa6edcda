"""salicon serve --ray: the API as a Ray Serve deployment (2 replicas of a small
net on a local Ray instance), a replica killed under load, the options."""
from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter

import numpy as np
import pytest
from PIL import Image

from salicon import Salicon
from salicon.config import SaliconConfig
from salicon.errors import OptionError
from salicon.serve_ray import ServeError, ServeOptions, replica_resources

from .conftest import ROOT
from .test_serve import _free_port, _wait_for

TOKEN = "ray-serve-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}

REPLICA = "ServeReplica:salicon:SaliconReplica"


def test_replica_resources_share_cpus_or_take_a_gpu_each():
    cpu = ServeOptions(config=SaliconConfig(device="auto"), replicas=2)
    assert replica_resources(cpu, {"CPU": 8}) == {"num_cpus": 4}
    assert replica_resources(cpu, {"CPU": 2, "GPU": 2}) == {"num_gpus": 1, "num_cpus": 1}
    assert replica_resources(ServeOptions(config=SaliconConfig(device="cpu"), replicas=3), {"CPU": 2, "GPU": 1}) == \
        {"num_cpus": 1}
    scaled = ServeOptions(min_replicas=1, max_replicas=4, replica_cpus=0.5)
    assert replica_resources(scaled, {"CPU": 16}) == {"num_cpus": 0.5}
    with pytest.raises(OptionError, match="device cuda: the Ray cluster has no GPU"):
        replica_resources(ServeOptions(config=SaliconConfig(device="cuda")), {"CPU": 4})
    # OpenVINO and ONNX Runtime (CPU build) replicas take CPUs even on a GPU cluster, at any precision.
    for runtime, precision in (("openvino", "fp32"), ("openvino", "int8"), ("auto", "int8")):
        options = ServeOptions(config=SaliconConfig(runtime=runtime, precision=precision), replicas=2)
        assert replica_resources(options, {"CPU": 8, "GPU": 2}) == {"num_cpus": 4}


@pytest.mark.parametrize("fields, message", [({"replicas": 0}, "at least 1"),
                                             ({"min_replicas": 1}, "both"),
                                             ({"min_replicas": 3, "max_replicas": 2}, "min <= max")])
def test_serve_options_refuse_impossible_scaling(fields, message):
    with pytest.raises(ServeError, match=message):
        ServeOptions(**fields)


def _cli(*args: str, code: str = "") -> subprocess.CompletedProcess:
    program = f"import sys\n{code}\nfrom salicon.cli import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run([sys.executable, "-c", program, *args], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)


def test_ray_options_need_ray_and_go_together():
    done = _cli("serve", "--replicas", "2")
    assert done.returncode == 2 and "--replicas applies to salicon serve --ray only" in done.stderr
    done = _cli("serve", "--ray", "--replicas", "2", "--min-replicas", "1", "--max-replicas", "3")
    assert done.returncode == 2 and "not both" in done.stderr


def test_without_ray_serve_the_install_command_is_named():
    done = _cli("serve", "--ray", code="sys.modules['ray.serve'] = None")
    assert done.returncode == 1
    assert 'pip install "salicon[serve]"' in done.stderr and "Traceback" not in done.stderr


# ------------------------------------------------------------ on Ray Serve


def _replica_pids() -> set[int]:
    lines = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout.splitlines()
    return {int(line.split()[0]) for line in lines if REPLICA in line}


@pytest.fixture(scope="module")
def ray_server(small_model, small_prototxt):
    """salicon serve --ray --replicas 2 on a local Ray instance, stopped with Ctrl-C (SIGINT) at the end."""
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed: pip install -e '.[serve]'")
    port = _free_port()
    proc = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--ray", "--replicas", "2", "--port", str(port),
                             "--model", str(small_model), "--prototxt", str(small_prototxt), "--queue", "4",
                             "--request-timeout", "90"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "SALICON_TOKEN": TOKEN})  # every route needs it, on each replica
    url = f"http://127.0.0.1:{port}"
    lines: list[str] = []  # stderr, read on a thread so the pipe never fills
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stderr.readline, "")), daemon=True)
    reader.start()
    try:
        deadline = time.time() + 300
        while not any("Ctrl-C stops" in line for line in lines):  # every replica is up
            assert proc.poll() is None and time.time() < deadline, "".join(lines)[-3000:]
            time.sleep(0.5)
        _wait_for(url + "/api/health", proc, seconds=60, headers=AUTH)
        yield url, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("salicon serve --ray did not stop within 90 s of Ctrl-C: "
                                 + "".join(lines)[-3000:]) from None
    reader.join(timeout=10)
    assert proc.returncode == 0, "".join(lines)[-3000:]


def _png(rng: np.random.Generator, h: int, w: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


@pytest.mark.slow
def test_the_same_app_answers_from_both_replicas(ray_server, small_model, small_prototxt):
    import httpx

    url, _ = ray_server
    rng = np.random.default_rng(3)
    reference = Salicon(small_model, small_prototxt, device="cpu", precision="fp32")
    assert httpx.get(url + "/api/health").status_code == 401  # the token is required
    assert httpx.get(url + "/", headers={"Accept": "text/html"}).status_code == 401
    with httpx.Client(base_url=url, timeout=60, headers=AUTH) as client:
        replicas = {client.get("/api/health").json()["replica"] for _ in range(30)}
        assert len(replicas) == 2, replicas
        health = client.get("/api/health").json()
        assert health["server"] == "ray serve" and health["model"] == small_model.name
        assert client.get("/").status_code == 200 and "SALICON" in client.get("/").text
        assert client.get("/docs").status_code == 200
        for h, w in ((70, 90), (41, 133)):
            data = _png(rng, h, w)
            answer = client.post("/api/saliency", params={"format": "npy"}, files={"file": ("x.png", data)})
            assert answer.status_code == 200
            got = np.load(io.BytesIO(answer.content))
            np.testing.assert_allclose(got, reference.compute_saliency(data), atol=1e-5)
        # the error codes of the single-process server
        assert client.post("/api/saliency", files={"file": ("a.txt", b"not an image")}).status_code == 415
        assert client.post("/api/saliency").status_code == 400
        assert client.post("/api/saliency", params={"format": "gif"},
                           files={"file": ("x.png", _png(rng, 20, 20))}).status_code == 400
        # a kept result downloads from whichever replica answers
        kept = client.post("/api/saliency", params={"format": "json", "keep": "true"},
                           files={"file": ("k.png", _png(rng, 30, 40))}).json()
        for _ in range(6):
            assert client.get(kept["downloads"]["map_png"]).status_code == 200
        assert client.get("/api/results/nothing/map.png").status_code == 404
        # video jobs keep files on one machine: the single-process server runs them
        refused = client.post("/api/video", files={"file": ("c.mp4", b"clip")})
        assert refused.status_code == 501 and "without --ray" in refused.json()["error"]


@pytest.mark.slow
def test_a_killed_replica_under_load_loses_no_request_silently(ray_server):
    """8 clients post for 20 s; one replica is SIGKILLed after 5 s. Every request
    is answered (200) or refused with a 5xx, none hangs, and Ray Serve brings the
    replica back."""
    import httpx

    url, _ = ray_server
    data = _png(np.random.default_rng(4), 60, 80)
    outcomes: list[tuple] = []
    stop = time.time() + 20

    def client() -> None:
        with httpx.Client(base_url=url, timeout=120, headers=AUTH) as c:
            while time.time() < stop:
                start = time.time()
                try:
                    status = c.post("/api/saliency", files={"file": ("x.png", data)}).status_code
                except httpx.HTTPError as exc:  # a hang would end here, at the client's timeout
                    status = type(exc).__name__
                outcomes.append((status, time.time() - start))

    before = _replica_pids()
    assert len(before) == 2
    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(5)
    victim = sorted(before)[0]
    os.kill(victim, signal.SIGKILL)
    for t in threads:
        t.join(timeout=200)
    assert not any(t.is_alive() for t in threads), "a client is still waiting"
    statuses = Counter(s for s, _ in outcomes)
    assert set(statuses) <= {200, 500, 502, 503, 504}, statuses
    assert statuses[200] > 0 and max(d for _, d in outcomes) < 90, (statuses, max(d for _, d in outcomes))
    deadline = time.time() + 120
    while time.time() < deadline and not (len(_replica_pids()) == 2 and victim not in _replica_pids()):
        time.sleep(1)
    after = _replica_pids()
    assert len(after) == 2 and victim not in after, (before, after)
    import httpx as _h
    assert _h.get(url + "/api/health", timeout=30, headers=AUTH).status_code == 200
