"""docs/align-rendered.png: alignment shown on rendered faces (no CelebA image in the repository).

Each row: a rendered 178x218 face moved by a random similarity into a larger photo (blurred mirror
outside, as in bench/bench_align.py), the photo with what `faceedit.align` found drawn on it (the
face's box, its five landmarks, the model's crop mapped back), the aligned face, and the face as
rendered, for comparison.

    PYTHONPATH=. python scripts/align_figure.py [--rows 4] [--out docs/align-rendered.png]
"""

from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
from bench_align import natural_canvas, random_move  # noqa: E402

from faceedit.align import align_photo, draw_detection  # noqa: E402
from faceedit.files import atomic_write_bytes  # noqa: E402
from faceedit.synth import render_face, sample_labels  # noqa: E402

H = 218  # row height


def _fit(img: np.ndarray) -> Image.Image:
    im = Image.fromarray(img)
    return im.resize((round(im.width * H / im.height), H), Image.Resampling.BILINEAR)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=4)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("docs/align-rendered.png"))
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    labels = sample_labels(64, args.seed)
    rows, i = [], 0
    while len(rows) < args.rows and i < len(labels):
        face = np.asarray(render_face(labels[i], i).convert("RGB"))
        i += 1
        m, size = random_move(rng, 20.0)
        photo = natural_canvas(face, m, size)
        try:
            got = align_photo(photo)
        except ValueError:
            continue
        rows.append([_fit(draw_detection(photo, got, side=512)), _fit(got.image), _fit(face)])
    widths = [max(r[k].width for r in rows) for k in range(3)]
    sheet = Image.new("RGB", (sum(widths) + 4 * 6, 18 + len(rows) * (H + 6)), "white")
    draw = ImageDraw.Draw(sheet)
    x = 6
    for k, title in enumerate(("moved into a photo: found (box, landmarks, crop)", "aligned", "as rendered")):
        draw.text((x, 4), title, fill="black")
        for j, r in enumerate(rows):
            sheet.paste(r[k], (x, 18 + j * (H + 6)))
        x += widths[k] + 6
    buf = io.BytesIO()
    sheet.save(buf, format="PNG", optimize=True)
    atomic_write_bytes(args.out, buf.getvalue())
    print(f"wrote {args.out} ({len(rows)} rows, {len(buf.getvalue()) // 1024} KB)")


if __name__ == "__main__":
    main()
