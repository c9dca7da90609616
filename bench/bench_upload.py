"""What one uploaded photo costs the editor to decode: peak memory growth and seconds, this tree
beside an older checkout, each in a fresh process.

    .venv/bin/python bench/bench_upload.py [--baseline OLD_CHECKOUT] [--side 7000]

The photo is a `side` x `side` 16-bit greyscale PNG (a ramp: ~100 KB on disk, 49 MP at 7000),
made once in a temporary folder. The work timed is what the editor's centre-crop /encode does
before the model: decode, the 64 px face, the 256 px crop preview (older code: `load_photo` and
`crop_preview(bytes)`; this tree: `open_photo`, `face_array`, `crop_preview(image)`). Prints one
JSON object; ratios old/new when --baseline is given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PROBE = """
import json, resource, sys, time
from pathlib import Path
import faceedit.editor as E
from faceedit import images as I
path = Path(sys.argv[1])
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
start = time.perf_counter()
if hasattr(I, "open_photo"):
    image = I.open_photo(path, 64, keep_side=E.PREVIEW_SIDE)
    face, preview = I.face_array(image, 64), E.crop_preview(image)
else:
    face, preview = I.load_photo(path, 64), E.crop_preview(path.read_bytes())
seconds = time.perf_counter() - start
grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024
print(json.dumps({"seconds": round(seconds, 2), "peak_rss_growth_mb": round(grown), "module": E.__file__}))
"""


def sixteen_bit_png(path: Path, side: int) -> Path:
    import numpy as np
    from PIL import Image

    ramp = np.tile((np.arange(side, dtype=np.uint32) * 65535 // max(1, side - 1)).astype(np.uint16), (side, 1))
    Image.fromarray(ramp).save(path)
    return path


def probe(tree: Path, photo: Path) -> dict:
    env = dict(os.environ, PYTHONPATH=str(tree))
    out = subprocess.run([sys.executable, "-c", PROBE, str(photo)], cwd=tree, env=env, capture_output=True,
                         text=True, timeout=600)
    if out.returncode != 0:
        raise RuntimeError(out.stderr[-2000:])
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", type=Path, default=None, help="an older checkout, measured the same way")
    p.add_argument("--side", type=int, default=7000, help="the photo's side in pixels (default: 7000)")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-upload-") as tmp:
        photo = sixteen_bit_png(Path(tmp) / "ramp16.png", args.side)
        result = {"photo": f"{args.side}x{args.side} 16-bit PNG, {photo.stat().st_size} bytes",
                  "load_average": os.getloadavg()[0], "this": probe(REPO, photo)}
        if args.baseline is not None:
            result["baseline"] = probe(args.baseline, photo)
            result["baseline_over_this"] = {k: round(result["baseline"][k] / max(result["this"][k], 1e-9), 1)
                                            for k in ("seconds", "peak_rss_growth_mb")}
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
