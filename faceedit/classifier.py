"""Someone else's image classifier, loaded from a file without unpickling it, and made to read faces.

Three formats are read, told apart by their bytes (not by the file name):

- a torch.export program (`.pt2`, written by `torch.export.save`: a zip holding `archive_format` and
  `models/`), read with `torch.export.load`;
- a TorchScript file (a zip holding `code/`, written by `torch.jit.save`), read with `torch.jit.load`;
- an ONNX model (a protobuf), run with onnxruntime.

A file written by `torch.save` (a zip holding only `data.pkl`, or a bare pickle) is refused: loading
it would run whatever code the pickle names. So is anything else, with an error naming the formats
expected.

The audit hands faces as float (B, 3, S, S) in [0, 1] at the cache's size S; `ClassifierSpec` says
how the model wants them instead (size, value range, layout, per-channel normalisation, a fixed batch
size) and what its outputs are (logits or probabilities, names of the columns). `Classifier.scores`
returns the logit of one chosen output per face, after checking the output's shape and finiteness.
"""

from __future__ import annotations

import hashlib
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Literal

import numpy as np
import torch
import torch.nn.functional as F

from faceedit.attributes import ATTRIBUTES

FORMATS = ("torch.export", "torchscript", "onnx")


class ClassifierError(ValueError):
    """A classifier file, or its answers, that the audit cannot use; the message says why."""


@dataclass(frozen=True)
class ClassifierSpec:
    """How a classifier reads faces and what its outputs are."""

    input_size: int = field(default=0, metadata={"help": "side of the square images the classifier "
                            "takes (0: the cache's size S; other sizes are resized bilinearly)"})
    value_range: tuple[float, ...] = field(default=(0.0, 1.0), metadata={"help": "LO HI: the pixel "
                                           "values it expects (0 1, -1 1, 0 255)"})
    layout: Literal["NCHW", "NHWC"] = field(default="NCHW", metadata={"help": "axis order of its input"})
    mean: tuple[float, ...] = field(default=(), metadata={"help": "per-channel mean subtracted after "
                                    "the value range (3 numbers, in the range's units; none: no "
                                    "normalisation)"})
    std: tuple[float, ...] = field(default=(), metadata={"help": "per-channel std divided by after "
                                   "the mean (3 numbers)"})
    batch: int = field(default=0, metadata={"help": "a fixed batch size the model was exported with "
                       "(0: any batch; an ONNX model's fixed batch is read from the file)"})
    scores: Literal["logit", "probability"] = field(default="logit", metadata={"help": "what the "
                                                    "audited output is: a logit (decision: > 0) or "
                                                    "a probability (decision: > 0.5)"})
    labels: tuple[str, ...] = field(default=(), metadata={"help": "names of the columns of a (B, K) "
                                    "output, so --output can name one (a 40-column output is read "
                                    "as CelebA's attributes unless given)"})

    def __post_init__(self) -> None:
        if self.input_size < 0:
            raise ValueError(f"ClassifierSpec.input_size={self.input_size}: expected 0 (the cache's "
                             "size) or a positive side")
        if len(self.value_range) != 2 or not self.value_range[0] < self.value_range[1]:
            raise ValueError(f"ClassifierSpec.value_range={self.value_range}: expected LO HI with LO < HI")
        for name in ("mean", "std"):
            v = getattr(self, name)
            if v and len(v) != 3:
                raise ValueError(f"ClassifierSpec.{name}={v}: expected 3 numbers (one per channel) or none")
        if (not self.mean) != (not self.std):
            raise ValueError(f"ClassifierSpec: mean={self.mean}, std={self.std}: give both or neither")
        if self.std and any(s <= 0 for s in self.std):
            raise ValueError(f"ClassifierSpec.std={self.std}: expected positive numbers")
        if self.batch < 0:
            raise ValueError(f"ClassifierSpec.batch={self.batch}: expected 0 (any) or a positive size")

    def to_dict(self) -> dict:
        return asdict(self)

    def prepare(self, x: torch.Tensor, size: int) -> torch.Tensor:
        """Faces as the audit has them, (B, 3, S, S) float in [0, 1], as the classifier wants them:
        (B, 3, s, s) or (B, s, s, 3), float32, in value_range, normalised. size: s (the resolved
        input_size)."""
        B, C, H, W = x.shape
        if (H, W) != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=H > size)
        lo, hi = self.value_range
        x = x.float() * (hi - lo) + lo
        if self.mean:
            x = (x - torch.tensor(self.mean).view(1, 3, 1, 1)) / torch.tensor(self.std).view(1, 3, 1, 1)
        if self.layout == "NHWC":
            x = x.permute(0, 2, 3, 1)  # (B, 3, s, s) -> (B, s, s, 3)
        return x.contiguous()


# ---------------------------------------------------------------------------- telling formats apart

def detect_format(path: str | Path) -> str:
    """"torch.export", "torchscript" or "onnx", from the file's bytes; a ClassifierError otherwise
    (a torch.save pickle among them, named as such)."""
    path = Path(path)
    if not path.is_file():
        raise ClassifierError(f"{path}: no such file (expected a classifier: {_EXPECTED})")
    with open(path, "rb") as f:
        head = f.read(8)
    if zipfile.is_zipfile(path):
        try:
            names = zipfile.ZipFile(path).namelist()
        except zipfile.BadZipFile as e:
            raise ClassifierError(f"{path}: a damaged zip archive ({e}); expected {_EXPECTED}") from None
        parts = {p for n in names for p in n.split("/")[1:2]}  # the first folder inside the archive's root
        if "archive_format" in parts or "models" in parts:
            return "torch.export"
        if "code" in parts:
            return "torchscript"
        if "data.pkl" in parts:
            raise ClassifierError(f"{path}: a torch.save pickle; it is not loaded, because unpickling "
                                  "runs code the file names. Save the model with torch.export.save "
                                  "(or torch.jit.save, or export it to ONNX)")
        raise ClassifierError(f"{path}: a zip archive that is neither a torch.export program nor "
                              f"a TorchScript file; expected {_EXPECTED}")
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        raise ClassifierError(f"{path}: a Python pickle; it is not loaded (unpickling runs code). "
                              f"Expected {_EXPECTED}")
    if _looks_like_onnx(path):
        return "onnx"
    raise ClassifierError(f"{path}: not a classifier file this audit reads; expected {_EXPECTED}")


_EXPECTED = ("a torch.export program (.pt2, torch.export.save), a TorchScript file "
             "(torch.jit.save) or an ONNX model (.onnx)")


def _looks_like_onnx(path: Path) -> bool:
    """An ONNX ModelProto starts with one of its fields: ir_version (tag 0x08), producer or domain
    strings, opset_import or graph (length-delimited, tags 0x12..0x3a); checked by onnxruntime later."""
    with open(path, "rb") as f:
        head = f.read(2)
    return len(head) == 2 and head[0] in (0x08, 0x12, 0x1a, 0x22, 0x2a, 0x32, 0x3a, 0x42)


# ---------------------------------------------------------------------------- running one

@dataclass(frozen=True)
class Output:
    """One audited output: its column among the model's outputs."""

    name: str  # as the user may call it: an output or column name, or its index as text
    index: int  # position among all columns
    columns: tuple[str, ...]  # every column's name, in order


class Classifier:
    """A loaded classifier: `scores(x)` -> the chosen output's logit per face.

    x: (B, 3, S, S) float in [0, 1] (what the audit decodes); returns (B,) float64 logits (a
    probability output is turned into its logit, so the decision is always logit > 0).
    """

    def __init__(self, path: Path, fmt: str, run: Callable[[np.ndarray], list[tuple[str, np.ndarray]]],
                 spec: ClassifierSpec, size: int, declared: tuple | None, output: str):
        self.path, self.format, self.spec, self.size = path, fmt, spec, size
        self._run, self._declared = run, declared
        self.sha256 = _sha256(path)
        self.output = self._resolve(output)

    # -- checks of what goes in and what comes out

    def _call(self, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
        """Run on prepared faces, in fixed-size batches when the model takes one batch size only."""
        B = len(x)
        fixed = self.spec.batch or (self._declared[0] if self._declared and isinstance(self._declared[0], int) else 0)
        if fixed and fixed != B:
            pad = (-B) % fixed
            xp = torch.cat([x, x[:1].expand(pad, *x.shape[1:])]) if pad else x
            parts = [self._call_once(xp[i:i + fixed]) for i in range(0, len(xp), fixed)]
            return [(name, np.concatenate([p[j][1] for p in parts])[:B]) for j, (name, _) in enumerate(parts[0])]
        return self._call_once(x)

    def _call_once(self, x: torch.Tensor) -> list[tuple[str, np.ndarray]]:
        self._check_declared(x)
        try:
            outs = self._run(x.numpy())
        except Exception as e:  # the model's own error: say what it was given and what to change
            raise ClassifierError(
                f"{self.path}: the classifier ({self.format}) failed on input of shape "
                f"{tuple(x.shape)} float32 (layout {self.spec.layout}, values in "
                f"{list(self.spec.value_range)}): {type(e).__name__}: {str(e).strip()[:400]}. "
                "Set --input-size, --layout, --value-range or --batch to what it was exported for"
            ) from None
        B = len(x)
        out = []
        for name, a in outs:
            a = np.asarray(a)
            if a.ndim == 0 or a.shape[0] != B or a.ndim > 2:
                raise ClassifierError(f"{self.path}: output {name!r} has shape {a.shape} for a batch "
                                      f"of {B}; expected ({B},) or ({B}, K) scores")
            out.append((name, a.reshape(B, -1).astype(np.float64)))
        return out

    def _check_declared(self, x: torch.Tensor) -> None:
        if self._declared is None:
            return
        want = self._declared
        if len(want) != x.dim() or any(isinstance(w, int) and w != g for w, g in zip(want, x.shape)):
            shown = "(" + ", ".join(str(w) for w in want) + ")"
            raise ClassifierError(
                f"{self.path}: the classifier's input is declared {shown}, but the audit would give "
                f"{tuple(x.shape)} ({self.spec.layout}, size {self.size}); set --input-size, "
                "--layout or --batch to match it")

    def _columns(self, outs: list[tuple[str, np.ndarray]]) -> list[str]:
        if len(outs) == 1:
            name, a = outs[0]
            K = a.shape[1]
            labels = self.spec.labels or (ATTRIBUTES if K == len(ATTRIBUTES) else ())
            if labels and len(labels) != K:
                raise ClassifierError(f"{self.path}: {len(labels)} --labels given, but the output has "
                                      f"{K} columns")
            return list(labels) if labels else ([name] if K == 1 else [str(k) for k in range(K)])
        cols = []
        for name, a in outs:
            cols += [name] if a.shape[1] == 1 else [f"{name}[{k}]" for k in range(a.shape[1])]
        return cols

    def _resolve(self, output: str) -> Output:
        probe = torch.full((2, 3, self.size, self.size), 0.5)
        outs = self._call(self.spec.prepare(probe, self.size))
        cols = self._columns(outs)
        text = str(output).strip()
        if text.lstrip("-").isdigit():
            i = int(text)
            if not 0 <= i < len(cols):
                raise ClassifierError(f"{self.path}: --output {i}, but the classifier gives {len(cols)} "
                                      f"score(s) per face (0..{len(cols) - 1}: {', '.join(cols[:12])}"
                                      f"{'...' if len(cols) > 12 else ''})")
            return Output(cols[i], i, tuple(cols))
        if text not in cols:
            raise ClassifierError(f"{self.path}: no output named {text!r}; it has {len(cols)}: "
                                  f"{', '.join(cols[:12])}{'...' if len(cols) > 12 else ''} (or give "
                                  "an index, or name the columns with --labels)")
        return Output(text, cols.index(text), tuple(cols))

    # -- the one thing the audit calls

    @torch.no_grad()
    def scores(self, x: torch.Tensor) -> np.ndarray:
        """(B, 3, S, S) float in [0, 1] -> (B,) float64 logits of the chosen output."""
        outs = self._call(self.spec.prepare(x.detach().float().cpu(), self.size))
        allcols = np.concatenate([a for _, a in outs], axis=1)  # (B, K)
        if allcols.shape[1] != len(self.output.columns):
            raise ClassifierError(f"{self.path}: {allcols.shape[1]} scores per face now, "
                                  f"{len(self.output.columns)} before; the classifier's output size changed")
        s = allcols[:, self.output.index]
        bad = ~np.isfinite(s)
        if bad.any():
            raise ClassifierError(f"{self.path}: output {self.output.name!r} is NaN or infinite for "
                                  f"{int(bad.sum())} of {len(s)} faces (first at position "
                                  f"{int(np.flatnonzero(bad)[0])} of the batch); expected finite scores")
        if self.spec.scores == "probability":
            if (s < 0).any() or (s > 1).any():
                raise ClassifierError(f"{self.path}: output {self.output.name!r} has values outside "
                                      f"[0, 1] ({s.min():.3g}..{s.max():.3g}) but --scores probability "
                                      "was given; use --scores logit")
            p = np.clip(s, 1e-7, 1 - 1e-7)
            s = np.log(p) - np.log1p(-p)
        return s

    def describe(self) -> dict[str, Any]:
        """What the report records of it."""
        return {"file": self.path.name, "sha256": self.sha256, "format": self.format,
                "output": self.output.name, "output_index": self.output.index,
                "outputs": len(self.output.columns), "input_size": self.size, **self.spec.to_dict()}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _torch_runner(module: Callable) -> Callable[[np.ndarray], list[tuple[str, np.ndarray]]]:
    def run(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        y = module(torch.from_numpy(x))
        if isinstance(y, torch.Tensor):
            return [("output", y.detach().float().numpy())]
        if isinstance(y, dict):
            return [(str(k), v.detach().float().numpy()) for k, v in y.items()]
        if isinstance(y, (tuple, list)):
            return [(str(i), v.detach().float().numpy()) for i, v in enumerate(y)]
        raise TypeError(f"the model returned a {type(y).__name__}, expected a tensor, a tuple or a dict of tensors")
    return run


def _export_declared(program) -> tuple | None:
    """The shape of an ExportedProgram's first user input (ints; a dynamic dimension as its name)."""
    try:
        for node in program.graph.nodes:
            if node.op == "placeholder" and node.name in program.graph_signature.user_inputs:
                shape = node.meta["val"].shape
                return tuple(int(d) if isinstance(d, int) or str(d).isdigit() else str(d) for d in shape)
    except (AttributeError, KeyError):
        return None
    return None


def load_classifier(path: str | Path, output: str | int = 0, spec: ClassifierSpec = ClassifierSpec(),
                    image_size: int = 64) -> Classifier:
    """Open a classifier file (any of FORMATS), check it answers faces of image_size (or
    spec.input_size) with finite scores, and pick `output` (an index, or a name: an output's, a
    dict key, or a column of spec.labels). Never unpickles."""
    path = Path(path)
    fmt = detect_format(path)
    size = spec.input_size or image_size
    declared = None
    if fmt == "torch.export":
        try:
            program = torch.export.load(str(path))
        except Exception as e:
            raise ClassifierError(f"{path}: torch.export.load failed: {type(e).__name__}: {e}") from None
        declared = _export_declared(program)
        run = _torch_runner(program.module())
    elif fmt == "torchscript":
        try:
            module = torch.jit.load(str(path), map_location="cpu")
        except Exception as e:
            raise ClassifierError(f"{path}: torch.jit.load failed: {type(e).__name__}: {e}") from None
        module.eval()
        run = _torch_runner(module)
    else:
        run, declared = _onnx_runner(path)
    if declared is not None and len(declared) != 4:
        raise ClassifierError(f"{path}: the classifier's input is declared with shape {declared}; "
                              "expected a batch of images (4 axes)")
    return Classifier(path, fmt, run, spec, size, declared, str(output))


def _onnx_runner(path: Path) -> tuple[Callable, tuple | None]:
    try:
        import onnxruntime as ort
    except ImportError:  # a declared dependency; say how to get it if an install lacks it
        raise ClassifierError(f"{path}: an ONNX model, but onnxruntime is not installed "
                              "(pip install onnxruntime)") from None
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings are about graph rewrites
    try:
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as e:
        raise ClassifierError(f"{path}: not a model onnxruntime can open ({type(e).__name__}: "
                              f"{str(e).strip()[:300]}); expected {_EXPECTED}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        raise ClassifierError(f"{path}: the ONNX model takes {len(inputs)} inputs "
                              f"({', '.join(i.name for i in inputs)}); expected one batch of images")
    name = inputs[0].name
    declared = tuple(d if isinstance(d, int) else str(d) for d in inputs[0].shape)
    names = [o.name for o in session.get_outputs()]

    def run(x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        return list(zip(names, session.run(None, {name: x.astype(np.float32)})))

    return run, declared


def decision(logits: np.ndarray) -> np.ndarray:
    """The classifier's decision from its logit: positive where > 0."""
    return np.asarray(logits) > 0


def probability(logits: np.ndarray) -> np.ndarray:
    """sigmoid, computed without overflow."""
    from scipy.special import expit

    return expit(np.asarray(logits, np.float64))


__all__ = ["FORMATS", "Classifier", "ClassifierError", "ClassifierSpec", "Output", "decision",
           "detect_format", "load_classifier", "probability"]
