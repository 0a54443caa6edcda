"""The parts of ``benchmarks/gpu_check.py``, each run in its own process.

Every part fills ``ctx.result`` and saves it after each measurement, and checks
its time left before starting the next one (:class:`OutOfTime`).
"""
from __future__ import annotations

import io
import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
#: Forward variants measured (the names of salicon.engine.fast's switches they turn on).
VARIANT_ROWS = {"plain": "", "channels_last": "channels_last", "fuse_relu": "fuse_relu",
                "cast_weights": "cast_weights", "cuda_graphs": "cuda_graphs",
                "fast": "channels_last,fuse_relu,cast_weights,cuda_graphs",
                "compile": "compile,channels_last,cast_weights"}
#: In which order (variant, precision) rows run, so that a budget running out costs the least
#: telling rows: the plain baselines, then bf16 and tf32 (the bar's), then fp32; compile last in each.
ROW_ORDER = ([("plain", p) for p in ("fp32", "tf32", "bf16")]
             + [(v, p) for p in ("bf16", "tf32", "fp32") for v in VARIANT_ROWS if v != "plain"])

OUTPUT = "saliency_map_out"
#: The small edited net of --small: every size divided by 20 (pool5 2x3).
SMALL_SIZES = {"1,3,1200,1600": "1,3,60,80", "1,3,600,800": "1,3,30,40",
               "1,512,38,50": "1,512,2,3", "1,1,38,50": "1,1,2,3"}
#: Forward variants of the fast configuration in end-to-end runs (all but compile).
FAST = "channels-last,fuse-relu,cast-weights"


class OutOfTime(Exception):
    """The part's time budget is spent."""


@dataclass
class Context:
    device: str
    small: bool
    budget: float
    out: Path
    result: dict = field(default_factory=dict)
    start: float = field(default_factory=time.perf_counter)
    tmp: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="gpu_check_")))

    def left(self) -> float:
        return self.budget - (time.perf_counter() - self.start)

    def check(self, need: float = 0.0) -> None:
        if self.left() < need:
            raise OutOfTime

    def save(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.result, indent=1))
        tmp.replace(self.out)

    def say(self, message: str) -> None:
        print(f"    {message}", flush=True)

    @property
    def cuda(self) -> bool:
        return self.device.startswith("cuda")

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    def prototxt(self, name: str = "salicon.prototxt") -> Path:
        """A shipped prototxt, edited to the small sizes with --small."""
        path = ROOT / "prototxt" / name
        if not self.small:
            return path
        text = path.read_text()
        for old, new in SMALL_SIZES.items():
            text = text.replace(f'"{old}"', f'"{new}"')
        edited = self.tmp / f"small_{name}"
        edited.write_text(text)
        return edited

    def image_size(self) -> tuple[int, int]:
        return (120, 160) if self.small else (600, 800)


def photos(n: int, size: tuple[int, int]) -> list[np.ndarray]:
    """``n`` distinct H x W x 3 uint8 photos (scikit-image's samples, shifted),
    or smooth synthetic scenes where scikit-image is missing."""
    from PIL import Image
    try:
        from skimage import data
        bases = [data.astronaut(), data.chelsea(), data.coffee(), data.rocket()]
    except Exception:
        yy, xx = np.mgrid[0:480, 0:640]
        bases = [np.stack([(np.sin(xx / (9 + k)) + np.cos(yy / (13 + k))) * 60 + 128] * 3, -1).astype(np.uint8)
                 for k in range(4)]
    out = []
    for i in range(n):
        base = np.asarray(Image.fromarray(bases[i % len(bases)]).resize((size[1], size[0]), Image.BICUBIC))
        out.append(np.ascontiguousarray(np.roll(base, 7 * (i // len(bases)), axis=1)))
    return out


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def write_jpegs(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, rgb in enumerate(photos(n, size)):
        path = folder / f"{i:05d}.jpg"
        path.write_bytes(jpeg_bytes(rgb))
        paths.append(path)
    return paths


def normalised(maps: torch.Tensor) -> torch.Tensor:
    flat = maps.float().reshape(maps.shape[0], -1)
    lo, hi = flat.min(1, keepdim=True).values, flat.max(1, keepdim=True).values
    return (flat - lo) / (hi - lo).clamp_min(1e-12)


def correlation(a: torch.Tensor, b: torch.Tensor) -> float:
    """The smallest per-image Pearson CC of two batches of maps."""
    a, b = a - a.mean(1, keepdim=True), b - b.mean(1, keepdim=True)
    return float(((a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1)).clamp_min(1e-12)).min())


# ------------------------------------------------------------------ forward
def part_forward(ctx: Context) -> None:
    from salicon.engine import Net, count_flops
    from salicon.engine.fast import FastForward, ForwardOptions
    from salicon.preprocess import image_to_inputs
    from salicon.pretrained import default_model_path

    device = torch.device(ctx.device)
    proto = ctx.prototxt()
    master = Net(proto)
    master.copy_from(default_model_path(), strict=True)
    state = master.state_dict()
    names = list(master.input_shapes)
    blobs = [image_to_inputs(rgb, [master.input_shapes[n][2:] for n in names]) for rgb in photos(8, ctx.image_size())]
    inputs = {n: torch.stack([b[i] for b in blobs]).to(device) for i, n in enumerate(names)}
    seconds = 0.05 if ctx.small else 1.0
    ctx.result.update(tflop_per_image=count_flops(master) / 1e12, rows=[], seconds_per_row=seconds,
                      inputs="8 photos (scikit-image samples), the shipped model's weights")
    reference: dict[int, torch.Tensor] = {}
    for variant, precision in ROW_ORDER:
        options = ForwardOptions.parse(VARIANT_ROWS[variant])
        row = {"variant": variant, "precision": precision}
        if options.cuda_graphs and not ctx.cuda:
            ctx.result["rows"].append({**row, "skipped": "CUDA graphs need a GPU"})
            continue
        if variant == "cast_weights" and precision != "bf16":
            continue  # the same net as plain: weights are cast for bf16 only
        if options.compile:  # compiling alone takes seconds to a minute; the other rows come first
            if ctx.left() < (12 if ctx.small else 25):
                ctx.result["rows"].append({**row, "skipped": "too little of the part's budget left to compile"})
                continue
        ctx.check(need=0.5 if ctx.small else 4)
        net = Net(proto, device=device)
        net.load_state_dict(state)
        net.eval().requires_grad_(False)
        fast = FastForward(net, OUTPUT, options, precision)
        for batch in (1, 8):
            ctx.check(need=0.2 if ctx.small else 2)
            feeds = {k: v[:batch] for k, v in inputs.items()}
            try:
                measured = time_forward(ctx, fast, feeds, precision, device, seconds)
            except (RuntimeError, ValueError) as exc:  # one variant failing must not end the part
                ctx.result["rows"].append({**row, "batch": batch, "error": f"{type(exc).__name__}: {exc}"[:500]})
                ctx.save()
                ctx.say(f"{variant:13s} {precision:4s} batch {batch}: failed: {exc}")
                continue
            maps = normalised(measured.pop("out"))
            if variant == "plain" and precision == "fp32":
                reference[batch] = maps
            measured.update(batch=batch, cc_vs_fp32=correlation(maps, reference[batch]) if batch in reference
                            else None, map_std_min=float(maps.std(1).min()),
                            tflops=measured["img_per_s"] * ctx.result["tflop_per_image"])
            ctx.result["rows"].append({**row, **measured})
            ctx.save()
            ctx.say(f"{variant:13s} {precision:4s} batch {batch}: {measured['img_per_s']:8.1f} img/s, "
                    f"first call {measured['first_call_s']:.2f} s, CC vs fp32 {measured['cc_vs_fp32']}")
        del net, fast
        if ctx.cuda:
            torch.cuda.empty_cache()


def time_forward(ctx, fast, feeds, precision, device, seconds) -> dict:
    """First call, then img/s over ``seconds`` (at least 3 calls) after one more warm-up call."""
    from salicon.device import precision_context

    with torch.inference_mode(), precision_context(precision, device):
        start = time.perf_counter()
        out = fast(**feeds)
        ctx.sync()
        first = time.perf_counter() - start
        fast(**feeds)
        ctx.sync()
        calls, start = 0, time.perf_counter()
        while calls < 3 or (time.perf_counter() - start < seconds and ctx.left() > 1):
            out = fast(**feeds)
            calls += 1
        ctx.sync()
        elapsed = time.perf_counter() - start
    batch = next(iter(feeds.values())).shape[0]
    return {"img_per_s": calls * batch / elapsed, "calls": calls, "first_call_s": first, "out": out}


# ------------------------------------------------------------- end to end
def part_end_to_end(ctx: Context) -> None:
    from salicon.cli import main as cli

    n = 16 if ctx.small else 256
    paths = write_jpegs(ctx.tmp / "jpegs", n, (150, 200) if ctx.small else (600, 800))
    proto = ctx.prototxt()
    precision = "bf16" if ctx.cuda else "fp32"
    ctx.result.update(images=n, image_size=list((150, 200) if ctx.small else (600, 800)), predict=[],
                      compute_saliency=[])
    runs = [("threads", FAST, precision, 8)]
    if ctx.cuda:
        from salicon.decode import gpu_decode_problem
        problem = gpu_decode_problem(torch.device(ctx.device))
        if problem:
            ctx.result["gpu_decode"] = problem
        else:
            runs.append(("gpu", FAST, precision, 8))
    runs.append(("threads", "", "fp32", 8))  # the defaults, fp32
    warm = [str(p) for p in paths[:8]]
    for decode, variants, prec, batch in runs:
        ctx.check(need=2 if ctx.small else 8)
        args = ["--device", ctx.device, "--batch-size", str(batch), "--precision", prec, "--runtime", "pytorch",
                "--decode", decode, "--prototxt", str(proto), "-q"] + (["--variants", variants] if variants else [])
        cli(["predict", *warm, "-o", str(ctx.tmp / "warm")] + args)
        out = ctx.tmp / f"out_{decode}_{prec}_{len(variants)}"
        start = time.perf_counter()
        code = cli(["predict", str(ctx.tmp / "jpegs"), "-o", str(out)] + args)
        elapsed = time.perf_counter() - start
        row = {"decode": decode, "variants": variants or "none", "precision": prec, "batch": batch,
               "exit_code": code, "maps": len(list(out.glob("*.png"))), "seconds": elapsed, "img_per_s": n / elapsed}
        ctx.result["predict"].append(row)
        ctx.save()
        ctx.say(f"predict --decode {decode} {prec} variants {variants or 'none'}: {row['img_per_s']:.1f} img/s "
                f"({row['maps']} maps, exit {code}; the model's loading included)")
    for variants, prec in ((FAST, precision), ("", "fp32")):
        ctx.check(need=2 if ctx.small else 6)
        ctx.result["compute_saliency"].append(time_compute_saliency(ctx, paths, proto, prec, variants))
        ctx.save()


def time_compute_saliency(ctx: Context, paths, proto, precision: str, variants: str) -> dict:
    from salicon.model import Salicon

    model = Salicon(prototxt=proto, device=ctx.device, precision=precision, runtime="pytorch", variants=variants)
    for path in paths[:2]:
        model.compute_saliency(path)
    limit = min(ctx.left() - 1, 3 if ctx.small else 10)
    times = []
    for path in paths[2:]:
        start = time.perf_counter()
        model.compute_saliency(path)
        times.append(time.perf_counter() - start)
        if sum(times) > limit:
            break
    row = {"variants": variants or "none", "precision": precision, "images": len(times),
           "median_s": statistics.median(times), "img_per_s": len(times) / sum(times)}
    ctx.say(f"compute_saliency {precision} variants {row['variants']}: {row['img_per_s']:.1f} img/s "
            f"(median {row['median_s'] * 1000:.1f} ms)")
    return row


# ------------------------------------------------------------------ train
def part_train(ctx: Context) -> None:
    from PIL import Image

    from salicon.pretrained import default_model_path
    from salicon.train import TrainConfig, Trainer

    data = ctx.tmp / "data"
    count = 6 if ctx.small else 24
    write_jpegs(data / "images", count, ctx.image_size())
    (data / "maps").mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        fixmap = np.zeros(ctx.image_size(), np.float32)
        for y, x in rng.integers(0, min(ctx.image_size()), (6, 2)):
            fixmap[max(0, y - 8):y + 8, max(0, x - 8):x + 8] = 255
        Image.fromarray(fixmap.astype(np.uint8)).save(data / "maps" / f"{i:05d}.png")
    steps, warmup = (6, 1) if ctx.small else (200, 10)
    precision = "bf16" if ctx.cuda else "fp32"
    ctx.result.update(rows=[], steps=steps, warmup=warmup, precision=precision, images=count)
    weights = {}
    for update in ("per-blob", "multi-tensor"):
        ctx.check(need=2 if ctx.small else 8)
        cfg = TrainConfig(data=str(data), out=str(ctx.tmp / f"run_{update}"), prototxt=str(
            ctx.prototxt("finetune_salicon.prototxt")), weights=str(default_model_path()), device=ctx.device,
            precision=precision, test=1, snapshot=0, seed=0, update=update)
        trainer = Trainer(cfg, log=lambda m: None)
        train_set, _ = trainer.load_data()
        display = max(1, trainer.solver_param.display or 20)
        losses = []
        for i in range(warmup + steps):
            if i == warmup:
                ctx.sync()
                start = time.perf_counter()
            feeds = trainer.feeds(train_set[i % len(train_set)])
            losses += trainer.backend.step(feeds, read=(i + 1) % display == 0)
            if i % 20 == 0 and ctx.left() < 1:
                raise OutOfTime
        losses += trainer.backend.flush()
        ctx.sync()
        elapsed = time.perf_counter() - start
        weights[update] = [p.detach().float().cpu() for p in trainer.net.parameters()]
        row = {"update": update, "steps_per_s": steps / elapsed, "ms_per_step": 1000 * elapsed / steps,
               "last_loss": losses[-1] if losses else None}
        ctx.result["rows"].append(row)
        ctx.save()
        ctx.say(f"train {update} {precision}: {row['steps_per_s']:.1f} steps/s ({row['ms_per_step']:.1f} ms/step)")
    diffs = [float((a - b).abs().max()) for a, b in zip(weights["per-blob"], weights["multi-tensor"])]
    ctx.result["max_abs_weight_diff_between_updates"] = max(diffs)


# ------------------------------------------------------------------ serve
def part_serve(ctx: Context) -> None:
    from salicon.model import Salicon
    from salicon.serve import SaliencyService, web_dependencies_missing

    seconds = 3 if ctx.small else 20
    uploads = [jpeg_bytes(rgb) for rgb in photos(8, ctx.image_size())]
    precision = "bf16" if ctx.cuda else "fp32"
    proto = ctx.prototxt()
    missing = web_dependencies_missing()
    ctx.result.update(clients=8, load_seconds=seconds, precision=precision,
                      transport="service" if missing else "http")
    if missing:
        ctx.result["note"] = (f"FastAPI is not installed ({missing}): the service `salicon serve` runs "
                              f"(decode, batching worker, post-processing) measured without HTTP")
        model = Salicon(prototxt=proto, device=ctx.device, precision=precision, runtime="pytorch")
        service = SaliencyService(model)
        service.saliency("warm.jpg", uploads[0])
        call = lambda data: service.saliency("upload.jpg", data)  # noqa: E731
        load(ctx, call, uploads, seconds)
        ctx.result["batches"] = {str(k): v for k, v in sorted(service.worker.batch_sizes.items())}
        service.worker.close()
        return
    serve_over_http(ctx, uploads, proto, precision, seconds)


def load(ctx: Context, call, uploads: list[bytes], seconds: float) -> None:
    """8 clients calling ``call`` in a loop for ``seconds``: maps, failures, latencies."""
    latencies, failures, lock = [], [], threading.Lock()
    seconds = min(seconds, ctx.left() - 1)
    if seconds < 1:
        raise OutOfTime  # the server's start took the part's budget
    stop = time.perf_counter() + seconds

    def client(k: int) -> None:
        i = k
        while time.perf_counter() < stop:
            start = time.perf_counter()
            try:
                call(uploads[i % len(uploads)])
                with lock:
                    latencies.append(time.perf_counter() - start)
            except Exception as exc:
                with lock:
                    failures.append(f"{type(exc).__name__}: {exc}"[:200])
            i += 1

    threads = [threading.Thread(target=client, args=(k,)) for k in range(8)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    lat = sorted(latencies)
    ctx.result.update(maps=len(latencies), failures=len(failures), failure_examples=failures[:3],
                      load_seconds=elapsed, maps_per_s=len(latencies) / elapsed,
                      p50_s=lat[len(lat) // 2] if lat else None, p95_s=lat[int(0.95 * len(lat))] if lat else None)
    ctx.say(f"serve ({ctx.result['transport']}): {len(latencies)} maps in {elapsed:.1f} s "
            f"({ctx.result['maps_per_s']:.1f}/s), {len(failures)} failures, p50 {ctx.result['p50_s']} s")


def serve_over_http(ctx: Context, uploads, proto, precision, seconds) -> None:
    import socket
    import urllib.request

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen([sys.executable, "-m", "salicon", "serve", "--port", str(port), "--device", ctx.device,
                               "--precision", precision, "--runtime", "pytorch", "--prototxt", str(proto)],
                              cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        while True:
            ctx.check(need=3)
            if server.poll() is not None:
                raise RuntimeError(f"salicon serve exited: {server.stderr.read().decode()[-1000:]}")
            try:
                urllib.request.urlopen(f"{url}/api/health", timeout=1).read()
                break
            except OSError:
                time.sleep(0.3)

        def call(data: bytes) -> None:
            boundary = "salicon-gpu-check"
            body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.jpg\"\r\n"
                    f"Content-Type: image/jpeg\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
            request = urllib.request.Request(f"{url}/api/saliency?format=png", data=body, method="POST", headers={
                "Content-Type": f"multipart/form-data; boundary={boundary}"})
            with urllib.request.urlopen(request, timeout=120) as response:
                if response.status != 200 or not response.read(8).startswith(b"\x89PNG"):
                    raise RuntimeError(f"HTTP {response.status}")

        call(uploads[0])  # warm-up
        load(ctx, call, uploads, seconds)
        health = json.loads(urllib.request.urlopen(f"{url}/api/health", timeout=10).read())
        ctx.result["batches"] = health.get("batches")
    finally:
        server.terminate()
        server.wait(timeout=20)


# -------------------------------------------------------------------- ray
def part_ray(ctx: Context) -> None:
    try:
        import ray  # noqa: F401
    except Exception as exc:
        ctx.result["skipped"] = f"Ray is not importable ({type(exc).__name__}: {exc})"
        return
    n = 8 if ctx.small else 64
    write_jpegs(ctx.tmp / "jpegs", n, ctx.image_size())
    out = ctx.tmp / "ray_out"
    cmd = [sys.executable, "-m", "salicon", "predict", str(ctx.tmp / "jpegs"), "-o", str(out), "--device",
           ctx.device, "--batch-size", "8", "--precision", "bf16" if ctx.cuda else "fp32", "--runtime", "pytorch",
           "--prototxt", str(ctx.prototxt()), "--ray"]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=max(1.0, ctx.left() - 2))
        code, tail = proc.returncode, proc.stderr[-1500:]
    except subprocess.TimeoutExpired as exc:
        code, tail = None, f"stopped at the part's budget: {(exc.stderr or b'')[-1500:]!r}"
    elapsed = time.perf_counter() - start
    maps = len(list(out.rglob("*.png"))) if out.exists() else 0
    ctx.result.update(images=n, maps=maps, exit_code=code, seconds=elapsed, img_per_s=maps / elapsed,
                      stderr_tail=tail, note="includes starting a local Ray instance and the actor's model load")
    ctx.say(f"predict --ray: exit {code}, {maps}/{n} maps in {elapsed:.1f} s")
