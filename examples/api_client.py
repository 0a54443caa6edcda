"""A small client of the `salicon serve` HTTP API, standard library only.

    python examples/api_client.py photo.jpg [more.jpg ...] [--url http://127.0.0.1:7860]

Writes <name>_saliency.npy (the float32 map) and <name>_overlay.png beside
each image, and prints the most salient points. Exit status 1 if any image
was refused (the server's message is printed).
"""
from __future__ import annotations

import argparse
import base64
import json
import sys
import urllib.error
import urllib.request
import uuid
from pathlib import Path


def post_image(url: str, path: Path, **params: str) -> bytes:
    """POST one image to /api/saliency as multipart form data; the response body."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: application/octet-stream\r\n\r\n").encode() + path.read_bytes() + \
        f"\r\n--{boundary}--\r\n".encode()
    query = "&".join(f"{k}={v}" for k, v in params.items())
    request = urllib.request.Request(f"{url}/api/saliency?{query}", data=body, method="POST",
                                     headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
    with urllib.request.urlopen(request, timeout=600) as response:
        return response.read()


def main() -> int:
    parser = argparse.ArgumentParser(description="Saliency maps from a salicon serve instance.")
    parser.add_argument("images", nargs="+", type=Path)
    parser.add_argument("--url", default="http://127.0.0.1:7860")
    args = parser.parse_args()

    try:
        with urllib.request.urlopen(f"{args.url}/api/health", timeout=10) as r:
            health = json.load(r)
    except (OSError, ValueError) as exc:  # refused, unknown host, timed out, not the API
        reason = getattr(exc, "reason", exc)
        print(f"api_client: no salicon server answers at {args.url} ({reason}); start one with "
              f"'salicon serve' or give its address with --url", file=sys.stderr)
        return 1
    print(f"server: {health['model']} on {health['device']}, salicon {health['version']}")
    failed = 0
    for path in args.images:
        try:  # one forward pass: the JSON answer, with the float map kept for download
            info = json.loads(post_image(args.url, path, format="json", overlay="true", keep="true"))
            with urllib.request.urlopen(args.url + info["downloads"]["map_npy"], timeout=60) as r:
                npy = r.read()
        except urllib.error.HTTPError as exc:  # 4xx: the server says what is wrong
            print(f"{path}: refused ({exc.code}): {json.load(exc).get('error')}", file=sys.stderr)
            failed += 1
            continue
        except OSError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        stem = path.with_suffix("")
        Path(f"{stem}_saliency.npy").write_bytes(npy)
        Path(f"{stem}_overlay.png").write_bytes(base64.b64decode(info["overlay_png"]))
        points = ", ".join(f"({p['x']}, {p['y']})" for p in info["peaks"])
        print(f"{path}: {info['width']}x{info['height']}, most salient points {points}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
