"""The `faceedit` console command.

Parses arguments and hands each subcommand to the library, to `workers/` or to `ui/`. Ray and
Gradio are imported only inside the subcommands that need them, so e.g. `faceedit edit` starts
without loading either. Options that configure a library dataclass are generated from its fields
(`add_dataclass_args`), so a new field needs no second edit here.

Each subcommand is a pair: `_add_<name>(sub)` declares its arguments, `_run_<name>(args)` runs it.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing
import warnings
from pathlib import Path
from typing import Any


# ---------------------------------------------------------------------------- dataclass <-> argparse

def add_dataclass_args(parser: argparse.ArgumentParser, cls: type, prefix: str = "",
                       exclude: tuple[str, ...] = (), defaults: Any = None,
                       defaults_name: str = "") -> None:
    """One `--field-name` option per field of the dataclass `cls`, its default in the help text.

    A field's help is the `help` entry of its metadata: `field(default=..., metadata={"help": ...})`.
    Booleans become `--x / --no-x`; tuples take several values. `defaults`, an instance of `cls`,
    gives the command's own defaults: where one differs from the dataclass's, the help says
    "(<defaults_name> default: value)".
    """
    hints = typing.get_type_hints(cls)
    group = parser.add_argument_group(f"{cls.__name__} ({cls.__module__})")
    for f in dataclasses.fields(cls):
        if f.name in exclude or not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()  # type: ignore[misc]
        label = "default"
        if defaults is not None and getattr(defaults, f.name) != default:
            default, label = getattr(defaults, f.name), f"{defaults_name} default".strip()
        flag = "--" + (prefix + f.name).replace("_", "-")
        hint = hints[f.name]
        help_text = f.metadata.get("help", "")
        help_text = f"{help_text} ({label}: {default})" if help_text else f"{label}: {default}"
        kwargs: dict[str, Any] = {"dest": prefix + f.name, "default": default, "help": help_text}
        origin, type_args = typing.get_origin(hint), typing.get_args(hint)
        if hint is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif origin is tuple:
            kwargs.update(nargs="+", type=type_args[0])
        elif origin is typing.Union or str(origin) == "<class 'types.UnionType'>":
            inner = [a for a in type_args if a is not type(None)][0]
            kwargs["type"] = inner
        elif origin is typing.Literal:
            kwargs.update(choices=type_args, type=type(type_args[0]))
        else:
            kwargs["type"] = hint
        group.add_argument(flag, **kwargs)


def dataclass_from_args(cls: type, args: argparse.Namespace, prefix: str = "", **overrides: Any):
    """Build `cls` from the options `add_dataclass_args` declared (tuples come back as tuples)."""
    from faceedit.config import field_values

    values = {f.name: getattr(args, prefix + f.name) for f in dataclasses.fields(cls)
              if f.init and hasattr(args, prefix + f.name)}
    return cls(**{**field_values(cls, values), **overrides})


# ---------------------------------------------------------------------------- subcommands
# A subcommand NAME is a line in COMMANDS plus two functions in this module:
# `_add_NAME(parser)` declares its options and `_run_NAME(args)` runs it (returns an exit code).

COMMANDS: dict[str, str] = {
    "run": "the main job: prepare, train on local Ray, vectors, judge, audit, then open the editor",
    "prepare": "decode, crop and resize a CelebA folder once into a dataset cache",
    "synth": "render synthetic faces with real CelebA label rows into a CelebA-layout folder",
    "serve": "serve the face editor (Gradio page and API) for a model bundle and vector bank",
    "vectors": "encode the train split and compute every attribute's vector by every method (a bank)",
    "align": "find the face in each photo and align it to CelebA's geometry (178x218 JPEGs + align.json)",
    "edit": "edit one photo with attribute vectors: original | reconstruction | edit, or a strip",
    "judge": "train the audit's judge: an image attribute classifier independent of the VAE",
    "audit": "edit held-out faces by every vector, re-score them with the judge, write the bias report",
    "audit-classifier": "audit someone else's face classifier with counterfactual faces (which "
                        "attributes move its answer)",
    "train": "train the VAE (or --kind cvae, the conditional VAE) on a dataset cache and write its "
             "model bundle (--workers N: on Ray)",
    "compare": "edit methods head to head on the same faces and judge: vectors, the conditional VAE, the latent search",
    "codemap": "draw the map of the codes of a training log (GIF, one frame per epoch) coloured by an attribute",
    "sample": "draw faces from a VAE bundle's prior into one PNG grid",
    "reconstruct": "encode and decode photos with a bundle: a PNG grid, originals above reconstructions",
    "pca": "fit the PCA baseline of the same D on a cache's train split; print its val PSNR",
}


def _add_prepare(p: argparse.ArgumentParser) -> None:
    from faceedit.prepare import PrepareConfig

    p.add_argument("--data", type=Path, required=True,
                   help="CelebA folder: img_align_celeba/ + list_attr_celeba.txt (or torchvision's DIR/celeba/)")
    p.add_argument("--out", type=Path, required=True, help="cache folder to write (replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, PrepareConfig)


def _run_prepare(args: argparse.Namespace) -> int:
    import json
    from dataclasses import asdict

    from faceedit.cache import Cache
    from faceedit.prepare import PrepareConfig, prepare

    config = dataclass_from_args(PrepareConfig, args)
    out = prepare(args.data, args.out, progress=not args.quiet, **asdict(config))
    manifest = Cache.open(out).manifest
    summary = {k: manifest[k] for k in ("count", "size", "content_hash")}
    summary.update(split=manifest["split"]["source"], counts=manifest["split"]["counts"],
                   duplicates=manifest["duplicates"], skipped=manifest["skipped"]["count"])
    print(f"wrote {out}: {json.dumps(summary)}")
    return 0


def _add_synth(p: argparse.ArgumentParser) -> None:
    from faceedit.synth import SynthConfig

    p.add_argument("--out", type=Path, required=True,
                   help="folder to write: img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt")
    p.add_argument("-n", "--n", dest="n", type=int, default=SynthConfig.n,
                   help=f"faces to render (default: {SynthConfig.n})")
    p.add_argument("--overwrite", action="store_true", help="replace an existing, different folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, SynthConfig, exclude=("n",))


def _run_synth(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from faceedit.synth import SynthConfig, render_dataset

    config = dataclass_from_args(SynthConfig, args)
    out = render_dataset(args.out, overwrite=args.overwrite, progress=not args.quiet, **asdict(config))
    print(f"wrote {out}: {config.n} faces, seed {config.seed}")
    return 0


def _add_serve(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder (made by `faceedit run`; "
                   "default, with no --bank either: the real-face model shipped with faceedit)")
    p.add_argument("--bank", type=Path, default=None, help="attribute vector bank folder (made by `faceedit run`)")
    p.add_argument("--cache", type=Path, default=None, help="cache to take example faces from "
                   "(default: the bundle's training cache, found by its hash beside the bundle)")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this "
                   "machine only; 0.0.0.0 exposes the editor to the network)")
    p.add_argument("--port", type=int, default=7860, help="port (default: 7860)")
    p.add_argument("--share", action="store_true", help="also open a public gradio.live link (off by "
                   "default; needs --auth or --no-auth)")
    _add_exposure(p)
    p.add_argument("--keep-minutes", type=float, default=60.0, help="uploads, rendered faces, downloads "
                   "and session state are deleted this long after they were made (default: 60)")
    p.add_argument("--allow-bank-mismatch", action="store_true", help="serve a bank built from "
                   "another model than --bundle (default: refuse; its edits would be meaningless)")
    p.add_argument("--cvae", type=Path, default=None, help="a conditional VAE bundle (faceedit train "
                   "--kind cvae): adds the method 'conditional', whose sliders change its labels")


def _add_exposure(p: argparse.ArgumentParser) -> None:
    p.add_argument("--auth", default=None, metavar="USER:PASSWORD", help="require this login; needed "
                   "(or --no-auth) when --host is not 127.0.0.1, since the page receives people's photos")
    p.add_argument("--no-auth", action="store_true", help="expose the editor beyond this machine "
                   "without a login (only on a network you trust)")


def _default_to_shipped(args: argparse.Namespace, doing: str) -> None:
    """No --bundle and no --bank: the real-face model shipped with faceedit (faceedit/shipped.py)."""
    if args.bundle is None and args.bank is None:
        from faceedit.shipped import shipped_paths, shipped_record

        args.bundle, args.bank = shipped_paths()
        made = shipped_record()
        print(f"{doing} the real-face model shipped with faceedit ({args.bundle.parent}; made by "
              f"`{made['command']}` at {made['commit']}; CelebA: non-commercial research use only)")


def _run_serve(args: argparse.Namespace) -> int:
    _default_to_shipped(args, "serving")
    missing = [f"--{name} {path or '(not given)'}" for name, path in (("bundle", args.bundle), ("bank", args.bank))
               if path is None or not Path(path).is_dir()]
    if missing:
        print(f"faceedit serve: no model to serve ({'; '.join(missing)}).\n"
              "Make a bundle and a bank with the main job, `./run.sh` (or `faceedit run`), then e.g.\n"
              "  faceedit serve --bundle runs/<run>/bundle --bank runs/<run>/bank", file=sys.stderr)
        return 2
    from ui.app import check_exposure, parse_auth, serve  # Gradio is imported here only

    auth = parse_auth(args.auth)
    check_exposure(args.host, args.share, auth, args.no_auth)
    serve(args.bundle, args.bank, host=args.host, port=args.port, share=args.share, cache=args.cache,
          auth=auth, no_auth=args.no_auth, keep_minutes=args.keep_minutes,
          allow_bank_mismatch=args.allow_bank_mismatch, cvae=args.cvae)
    return 0


def _add_vectors(p: argparse.ArgumentParser) -> None:
    from faceedit.bank import BankConfig

    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (faceedit train)")
    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit prepare)")
    p.add_argument("--out", type=Path, required=True, help="bank folder to write (replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, BankConfig)


def _run_vectors(args: argparse.Namespace) -> int:
    import json
    import time

    from faceedit.bank import BankConfig, build_bank_folder

    config = dataclass_from_args(BankConfig, args)
    start = time.perf_counter()
    bank = build_bank_folder(args.bundle, args.cache, args.out, config, progress=not args.quiet)
    summary = dict(bank.summary(), seconds=round(time.perf_counter() - start, 1), stages=bank.timing)
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def _add_edit(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, nargs="?", default=None,
                   help="any face photo (JPEG/PNG/WebP, any size): the face is found and aligned to "
                   "CelebA's geometry, then cropped like the cache")
    p.add_argument("--centre-crop", action="store_true", help="do not look for the face: crop the "
                   "photo's centre as it is (only right for photos already aligned like CelebA's)")
    p.add_argument("--face", type=int, default=None, help="which face when the photo has several: "
                   "0 = the largest (default), 1 the next, ...")
    p.add_argument("--pasted", type=Path, default=None, metavar="IMAGE", help="also write the photo "
                   "with the edit pasted back at its own resolution (with --set)")
    p.add_argument("--paste-mode", choices=("change", "face"), default="change", help="change: add "
                   "the edit's change to the photo, keeping its detail; face: blend in the decoded face "
                   "(default: change)")
    p.add_argument("--bundle", type=Path, default=None, help="model bundle folder (default, with no "
                   "--bank either: the real-face model shipped with faceedit)")
    p.add_argument("--bank", type=Path, default=None, help="attribute bank folder (faceedit vectors)")
    p.add_argument("--cache", type=Path, default=None, help="instead of a photo: faces of this cache's "
                   "val split (see --val-faces)")
    p.add_argument("--val-faces", type=int, nargs="+", default=[0], metavar="I",
                   help="with --cache: positions in the val split of the faces to edit (default: 0)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="ATTR=STRENGTH",
                   help="an edit, in units of the vector's length, e.g. --set Smiling=+1.5 --set "
                        "Eyeglasses=-1 (repeatable; negative removes the attribute)")
    p.add_argument("--method", default="balanced", help="naive | balanced | projection | boundary | "
                   "boundary_plain (default: balanced)")
    p.add_argument("--strip", metavar="ATTR", default=None, help="instead of --set: write White's "
                   "Figure 7 strip of ATTR (rows: --strip-methods, columns: --strengths)")
    p.add_argument("--strip-methods", nargs="+", default=["naive", "balanced"],
                   help="rows of the strip (default: naive balanced)")
    p.add_argument("--strengths", nargs="+", type=float, default=[-2.0, -1.0, 0.0, 1.0, 2.0],
                   help="columns of the strip (default: -2 -1 0 1 2)")
    p.add_argument("--scale", type=int, default=2, help="enlarge faces this many times, "
                   "nearest-neighbour (default: 2)")
    p.add_argument("--out", type=Path, required=True, help="image to write (.png, .jpg or .webp)")
    p.add_argument("--allow-bank-mismatch", action="store_true", help="use a bank built from another "
                   "model than --bundle (default: refuse)")


def _run_edit(args: argparse.Namespace) -> int:
    import torch
    from PIL import Image

    from faceedit.bank import AttributeBank, check_built_from
    from faceedit.bundle import load_bundle
    from faceedit.edit import edit, image_bytes, image_format, image_grid, parse_strengths, strip
    from faceedit.files import atomic_write_bytes
    from faceedit.shipped import model_or_shipped

    if (args.strip is None) == (not args.sets):
        raise ValueError("give either --set ATTR=STRENGTH (one or more) or --strip ATTR")
    strengths = parse_strengths(args.sets)
    _default_to_shipped(args, "editing with")
    args.bundle, args.bank = model_or_shipped(args.bundle, args.bank)  # one of the two alone: refused
    bundle, bank = load_bundle(args.bundle), AttributeBank.load(args.bank)
    model = bundle.model
    if bank.dim != model.config.latent_dim:
        raise ValueError(f"{args.bank}: vectors of dimension {bank.dim}, but the bundle's latent has "
                         f"{model.config.latent_dim}; build the bank from this bundle (faceedit vectors)")
    check_built_from(bank, model, bundle.path, allow=args.allow_bank_mismatch)
    if args.pasted is not None and (args.image is None or args.centre_crop or args.strip is not None):
        raise ValueError("--pasted needs a photo (IMAGE) aligned (no --centre-crop) and --set edits")
    formats = {path: image_format(path) for path in (args.out, args.pasted) if path is not None}
    x, placement = _edit_faces(args, model.config.image_size)  # (F, 3, S, S) float in [0, 1]
    with torch.no_grad():
        z = model.encode(x)[0]  # (F, D)
        if args.strip is not None:
            img = strip(model, z, bank, args.strip, args.strip_methods, args.strengths, args.scale, originals=x)
        else:
            recon, edited = model.decode(z), model.decode(edit(z, strengths, bank, args.method))
            img = image_grid([[x[f], recon[f], edited[f]] for f in range(len(x))],
                             col_labels=["original", "reconstruction", "edit"], scale=args.scale)
    atomic_write_bytes(args.out, image_bytes(img, formats[args.out]))
    print(f"wrote {args.out}")
    if args.pasted is not None:
        from faceedit.align import paste_back
        from faceedit.editor import to_image

        photo, alignment = placement
        pasted = paste_back(photo, alignment.matrix, to_image(edited[0]), to_image(recon[0]), args.paste_mode)
        atomic_write_bytes(args.pasted, image_bytes(Image.fromarray(pasted), formats[args.pasted]))
        print(f"wrote {args.pasted} ({photo.shape[1]}x{photo.shape[0]}, the edit pasted back)")
    return 0


def _add_align(p: argparse.ArgumentParser) -> None:
    p.add_argument("photos", type=Path, nargs="+", metavar="PHOTO", help="face photos (JPEG/PNG/WebP)")
    p.add_argument("--out", type=Path, required=True, help="folder for <name>.jpg (178x218, aligned like "
                   "CelebA's img_align_celeba) and align.json (boxes, landmarks, transforms, scores)")
    p.add_argument("--face", type=int, default=None, help="which face when a photo has several: 0 = the "
                   "largest (default), 1 the next, ...")
    p.add_argument("--overwrite", action="store_true", help="replace files in --out with the names it "
                   "writes even when faceedit did not write them (default: refuse, naming them; other "
                   "files there are never touched)")


def _run_align(args: argparse.Namespace) -> int:
    from faceedit.align import align_files

    report = align_files([str(p) for p in args.photos], str(args.out), face=args.face,
                          overwrite=args.overwrite)
    for message in report.failed.values():
        print(f"faceedit align: skipped {message}", file=sys.stderr)
    several = sum(1 for r in report.aligned.values() if r["faces_found"] > 1)
    print(f"wrote {len(report.aligned)} aligned face(s) and align.json to {args.out}"
          + (f"; {several} photo(s) had several faces (see align.json)" if several else "")
          + (f"; {len(report.failed)} photo(s) skipped" if report.failed else ""))
    return 0 if report.aligned else 2


def _add_judge(p: argparse.ArgumentParser) -> None:
    from faceedit.judge import TRAINING, JudgeConfig
    from faceedit.trainer import TrainConfig

    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit prepare); "
                   "the judge trains on its train split and is scored on its val split")
    p.add_argument("--out", type=Path, required=True, help="judge bundle folder to write (atomically)")
    add_dataclass_args(p, JudgeConfig)
    add_dataclass_args(p, TrainConfig, defaults=TRAINING, defaults_name="judge")


def _run_judge(args: argparse.Namespace) -> int:
    import json

    from faceedit.judge import JudgeConfig, JudgeRecipe
    from faceedit.recipe import train_bundle
    from faceedit.trainer import TrainConfig

    config, train = dataclass_from_args(JudgeConfig, args), dataclass_from_args(TrainConfig, args)
    _, record = train_bundle(args.cache, args.out, JudgeRecipe(config), train)
    auc = [v for v in record["judge"]["auc"].values() if v is not None]
    summary = {"auc_mean": round(sum(auc) / len(auc), 4) if auc else None,
               "cannot_judge": record["judge"]["cannot_judge"]}
    print(f"wrote {args.out}: {json.dumps(summary)}")
    return 0


def _add_audit(p: argparse.ArgumentParser) -> None:
    from faceedit.audit import AuditConfig

    p.add_argument("--bundle", type=Path, required=True, help="VAE bundle folder (faceedit train)")
    p.add_argument("--bank", type=Path, required=True, help="attribute bank folder (faceedit vectors)")
    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit prepare)")
    p.add_argument("--judge", type=Path, nargs="+", required=True, help="judge bundle folder "
                   "(faceedit judge); several: a committee scoring with the mean of their logits "
                   "(judges trained with different --seed), steadier leakage figures")
    p.add_argument("--out", type=Path, required=True, help="report folder to write (replaced atomically)")
    p.add_argument("--workers", type=int, default=0, help="spread the edit-and-score batches over N "
                   "Ray workers (0: in this process; the numbers are the same)")
    p.add_argument("--address", default="", help="with --workers: a Ray cluster to join (host:port "
                   "of the head; default: $RAY_ADDRESS, else a local Ray on 127.0.0.1 only)")
    p.add_argument("--device", default="cpu", help="where the in-process path decodes and scores: "
                   "cpu, cuda, cuda:1 (default: cpu)")
    p.add_argument("--pca-bundle", type=Path, default=None, help="a PCA bundle (kind pca) of the same D "
                   "to use as the baseline, with --pca-bank (default: fit PCA on the train split here)")
    p.add_argument("--pca-bank", type=Path, default=None, help="the attribute bank built on --pca-bundle")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--allow-bank-mismatch", action="store_true", help="audit a bank built from "
                   "another model than --bundle (default: refuse)")
    add_dataclass_args(p, AuditConfig)


def _run_audit(args: argparse.Namespace) -> int:
    import json

    from faceedit.audit import AuditConfig, Execution, audit_folders

    config = dataclass_from_args(AuditConfig, args)
    runner = None
    if args.workers:
        from workers.audit import ray_runner

        runner = ray_runner(args.workers, progress=not args.quiet, address=args.address)
    run = audit_folders(str(args.bundle), str(args.bank), str(args.cache), [str(j) for j in args.judge],
                        str(args.out), config,
                        execution=Execution(runner, device=args.device, progress=not args.quiet),
                        pca_bundle=args.pca_bundle and str(args.pca_bundle),
                        pca_bank=args.pca_bank and str(args.pca_bank),
                        allow_bank_mismatch=args.allow_bank_mismatch)
    print(f"wrote {args.out}: " + json.dumps({
        "attributes": len(run.result.attributes), "edited_images": run.result.edited_images,
        "seconds": round(run.seconds, 1), "faces_per_s": round(run.faces_per_s, 1)}))
    return 0


def _add_audit_classifier(p: argparse.ArgumentParser) -> None:
    from faceedit.classifier import ClassifierSpec
    from faceedit.classifier_audit import ClassifierAuditConfig

    p.add_argument("--classifier", type=Path, required=True, help="the model to audit: a torch.export "
                   "program (.pt2, torch.export.save), a TorchScript file (torch.jit.save) or an ONNX "
                   "model; it maps a batch of faces to scores. A torch.save pickle is refused")
    p.add_argument("--output", required=True, help="the output to audit: an index, or a name (an "
                   "output's name, a dict key, a --labels column, a CelebA attribute for 40 columns)")
    p.add_argument("--bundle", type=Path, required=True, help="VAE bundle folder (faceedit train)")
    p.add_argument("--bank", type=Path, required=True, help="attribute bank folder (faceedit vectors)")
    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit prepare): "
                   "its held-out faces are edited; its labels give the real-data error rates")
    p.add_argument("--judge", type=Path, nargs="*", default=[], help="judge bundle folder(s) (faceedit "
                   "judge) that check every counterfactual; without one nothing is checked")
    p.add_argument("--out", type=Path, required=True, help="report folder to write (atomically)")
    p.add_argument("--device", default="cpu", help="where the VAE and the judge run: cpu, cuda "
                   "(default: cpu; the classifier runs on CPU)")
    p.add_argument("--allow-bank-mismatch", action="store_true", help="use a bank built from another "
                   "model than --bundle (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, ClassifierAuditConfig)
    add_dataclass_args(p, ClassifierSpec)


def _run_audit_classifier(args: argparse.Namespace) -> int:
    from faceedit.classifier import ClassifierSpec
    from faceedit.classifier_audit import ClassifierAuditConfig, audit_classifier_folders
    from faceedit.classifier_report import headlines

    config = dataclass_from_args(ClassifierAuditConfig, args)
    spec = dataclass_from_args(ClassifierSpec, args)
    result = audit_classifier_folders(args.classifier, args.output, args.bundle, args.bank, args.cache,
                                      args.out, args.judge, config, spec, args.device, not args.quiet,
                                      args.allow_bank_mismatch)
    print("\n".join(headlines(result)))
    print(f"wrote {args.out / 'report.html'}")
    return 0


def _edit_faces(args: argparse.Namespace, size: int):
    """The faces `faceedit edit` works on: the photo (aligned unless --centre-crop), or val faces of
    --cache. -> ((F, 3, S, S) float, (photo, Alignment) for an aligned photo else None)."""
    import numpy as np

    from faceedit.cache import Cache, to_float
    from faceedit.images import face_array, load_image, load_photo

    if (args.image is None) == (args.cache is None):
        raise ValueError("give either a photo (IMAGE) or --cache CACHE (with --val-faces)")
    if args.image is not None and args.centre_crop:
        return to_float(load_photo(args.image, size)[None]), None  # uint8 (3, S, S) -> (1, 3, S, S)
    if args.image is not None:
        from PIL import Image

        from faceedit.align import AlignError, align_photo

        photo = np.asarray(load_image(args.image))
        try:
            alignment = align_photo(photo, args.face)
        except AlignError as e:
            raise AlignError(f"{args.image}: {e} (--centre-crop edits the photo's centre as it is)") from None
        face = face_array(Image.fromarray(alignment.image), size)
        return to_float(face[None]), (photo, alignment)
    cache = Cache.open(args.cache)
    if cache.size != size:
        raise ValueError(f"{args.cache}: {cache.size} px faces, but the bundle takes {size} px")
    val = cache.indices("val")
    bad = [i for i in args.val_faces if not 0 <= i < len(val)]
    if bad:
        raise ValueError(f"--val-faces {bad}: the val split of {args.cache} has {len(val)} faces (0..{len(val) - 1})")
    return to_float(cache.images[val[args.val_faces]]), None


def _add_train(p: argparse.ArgumentParser) -> None:
    from faceedit.cvae import CVAEConfig
    from faceedit.model import VAEConfig
    from faceedit.trainer import TrainConfig
    from workers.train import RayConfig

    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit "
                   "prepare): trains on its train split, validates on its val split; its image "
                   "size sets the model's")
    p.add_argument("--out", type=Path, required=True, help="model bundle folder to write (atomically)")
    p.add_argument("--log-dir", type=Path, default=None, help="metrics.jsonl and figures/*.png of "
                   "the run (default: <out>-log beside the bundle)")
    p.add_argument("--workers", type=int, default=0, help="0 (default): the plain loop in this "
                   "process; N >= 1: N Ray Train workers (DDP, or local SGD with --sync-every)")
    p.add_argument("--kind", choices=("vae", "cvae"), default="vae", help="vae: the VAE; cvae: the "
                   "conditional VAE, told the labels (faceedit/cvae.py; its options below) (default: vae)")
    p.add_argument("--map-attribute", default="Smiling", help="after training, draw the map of the "
                   "codes (figures/codemap.gif in the log) coloured by this attribute; empty: none "
                   "(`faceedit codemap` redraws it with another) (default: Smiling)")
    add_dataclass_args(p, VAEConfig, exclude=("image_size",))
    add_dataclass_args(p, CVAEConfig, exclude=tuple(f.name for f in dataclasses.fields(VAEConfig)))
    add_dataclass_args(p, TrainConfig)
    add_dataclass_args(p, RayConfig)


def _run_train(args: argparse.Namespace) -> int:
    import json

    from faceedit.cache import Cache
    from faceedit.cvae import CVAERecipe
    from faceedit.objective import VAERecipe
    from faceedit.trainer import TrainConfig

    cache = Cache.open(args.cache)
    model_config = _model_config(args, cache.size)
    train_config = dataclass_from_args(TrainConfig, args)
    log_dir = args.log_dir or args.out.with_name(args.out.name + "-log")
    if log_dir.exists() and not log_dir.is_dir():  # say so now, not from a Ray worker later
        raise ValueError(f"--log-dir {log_dir}: exists and is not a folder (metrics.jsonl and "
                         "figures/ go in it); pass another --log-dir")
    recipe = (CVAERecipe if args.kind == "cvae" else VAERecipe)(model_config, args.map_attribute)
    if args.workers >= 1:
        from workers.train import RayConfig, train_on_ray

        run = train_on_ray(args.cache, args.out, recipe, train_config, args.workers,
                           dataclass_from_args(RayConfig, args), log_dir=log_dir)
        metrics = run.metrics
    else:
        from faceedit.recipe import train_bundle
        from faceedit.trainer import NonFiniteLoss

        try:
            metrics = train_bundle(cache, args.out, recipe, train_config, log_dir)[0].metrics
        except NonFiniteLoss as e:
            print(f"faceedit train: error: {e}", file=sys.stderr)
            return 3
    shown = {k: round(v, 4) for k, v in metrics.items() if k.startswith("val_") or k == "step"}
    print(f"wrote {args.out} (log: {log_dir}): {json.dumps(shown)}")
    if args.map_attribute and (log_dir / "figures" / "codemap.gif").is_file():
        print(f"map of the codes: {log_dir / 'figures' / 'codemap.gif'} (one frame per epoch)")
    return 0


def _model_config(args: argparse.Namespace, size: int):
    """VAEConfig, or CVAEConfig with --kind cvae; CVAE options with --kind vae are an error."""
    from faceedit.cvae import CVAEConfig
    from faceedit.model import VAEConfig

    if args.kind == "cvae":
        return dataclass_from_args(CVAEConfig, args, image_size=size)
    extra = [f.name for f in dataclasses.fields(CVAEConfig) if f.name not in
             {g.name for g in dataclasses.fields(VAEConfig)} and getattr(args, f.name) != f.default]
    if extra:
        raise ValueError(f"--{extra[0].replace('_', '-')} is an option of --kind cvae (given with --kind vae)")
    return dataclass_from_args(VAEConfig, args, image_size=size)


def _add_compare(p: argparse.ArgumentParser) -> None:
    from faceedit.compare import CompareConfig
    from faceedit.search import SearchConfig

    p.add_argument("--cache", type=Path, required=True, help="dataset cache (faceedit prepare)")
    p.add_argument("--judge", type=Path, nargs="+", required=True, help="judge bundle(s) (faceedit judge)")
    p.add_argument("--bundle", type=Path, required=True, help="VAE bundle whose vectors, search and probe are compared")
    p.add_argument("--bank", type=Path, required=True, help="its attribute bank (faceedit vectors)")
    p.add_argument("--cvae", type=Path, nargs="*", default=[], help="conditional VAE bundles "
                   "(faceedit train --kind cvae): method conditional:<folder name> each")
    p.add_argument("--vector-methods", nargs="+", default=["naive", "balanced", "projection"],
                   help="vector methods of the bank to compare (default: naive balanced projection)")
    p.add_argument("--search", action=argparse.BooleanOptionalAction, default=True,
                   help="also the latent score search (default: on)")
    p.add_argument("--optimism", nargs="*", default=["Smiling", "Heavy_Makeup", "Eyeglasses"],
                   metavar="ATTR", help="attributes of the predictor-vs-judge figure (none: skip it)")
    p.add_argument("--probe-faces", type=int, default=3000, help="train faces the linear probes of "
                   "each model's code are fitted on (scored on the whole val split) (default: 3000)")
    p.add_argument("--out", type=Path, required=True, help="folder to write (replaced atomically)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_dataclass_args(p, CompareConfig)
    add_dataclass_args(p, SearchConfig, prefix="search_")


def _run_compare(args: argparse.Namespace) -> int:
    from faceedit.compare import CompareConfig, compare_folders
    from faceedit.search import SearchConfig

    doc = compare_folders(str(args.cache), [str(j) for j in args.judge], str(args.bundle),
                          str(args.bank), str(args.out), [str(c) for c in args.cvae], args.search,
                          args.vector_methods, dataclass_from_args(CompareConfig, args),
                          args.optimism, args.probe_faces,
                          dataclass_from_args(SearchConfig, args, prefix="search_"),
                          progress=not args.quiet)
    print(f"wrote {args.out}: compare.json, compare.md, strips/; reconstruction PSNR "
          + ", ".join(f"{m} {v:.2f} dB" for m, v in doc["reconstruction_psnr"].items()))
    return 0


def _add_codemap(p: argparse.ArgumentParser) -> None:
    p.add_argument("--log-dir", type=Path, required=True, help="the training log (faceedit train "
                   "--log-dir; holds records/codes_eNNN.npy)")
    p.add_argument("--cache", type=Path, required=True, help="the cache the run trained on (labels "
                   "of its first val faces colour the points)")
    p.add_argument("--attribute", default="Smiling", help="colour by this attribute (default: Smiling)")
    p.add_argument("--out", type=Path, default=None, help="folder for codemap.gif and "
                   "codemap_final.png (default: <log-dir>/figures)")


def _run_codemap(args: argparse.Namespace) -> int:
    from faceedit.cache import Cache
    from faceedit.codemap import write_map_for_cache

    done = write_map_for_cache(args.log_dir, Cache.open(args.cache), args.attribute, args.out)
    print(f"wrote {done.gif} ({len(done.epochs)} frames: epochs {done.epochs[0]}..{done.epochs[-1]}, "
          f"{done.faces} faces) and {done.final}")
    return 0


def _add_sample(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (faceedit train)")
    p.add_argument("-n", type=int, default=64, help="faces to draw (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed of the codes z (default: 0)")
    p.add_argument("--prior", choices=("fitted", "standard"), default="fitted",
                   help="fitted: z from the Gaussian fitted to the training faces' codes after "
                        "training (faces); standard: z ~ N(0, I), the VAE's own prior (default: fitted)")
    p.add_argument("--temperature", type=float, default=1.0,
                   help="scale of z's spread around the prior's mean; < 1 nearer the mode (default: 1)")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write (atomically)")


def _run_sample(args: argparse.Namespace) -> int:
    import torch

    from faceedit.bundle import load_bundle
    from faceedit.figures import grid, save_png

    if args.n < 1:
        raise ValueError(f"-n {args.n}: expected at least 1 face")
    model = load_bundle(args.bundle).model
    if not args.temperature > 0:
        raise ValueError(f"--temperature {args.temperature}: expected > 0")
    faces = model.sample(args.n, generator=torch.Generator().manual_seed(args.seed),
                         temperature=args.temperature, standard=args.prior == "standard")
    save_png(args.out, grid(faces))
    print(f"wrote {args.out}: {args.n} samples from {args.bundle}")
    return 0


def _add_reconstruct(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", type=Path, required=True, help="model bundle folder (faceedit train)")
    p.add_argument("images", type=Path, nargs="+", metavar="IMG", help="photos (JPEG, PNG, WebP): "
                   "CelebA-style crops work best")
    p.add_argument("--out", type=Path, required=True, help="PNG file to write (atomically)")


def _run_reconstruct(args: argparse.Namespace) -> int:
    import json

    import numpy as np
    import torch

    from faceedit.bundle import load_bundle
    from faceedit.cache import to_float
    from faceedit.figures import grid, save_png
    from faceedit.images import load_photo
    from faceedit.metrics import psnr

    model = load_bundle(args.bundle).model
    S = model.config.image_size
    x = to_float(np.stack([load_photo(path, S) for path in args.images]))  # (B, 3, S, S)
    with torch.no_grad():
        recon = model.reconstruct(x)
    save_png(args.out, grid(torch.cat([x, recon]), ncol=len(x)))
    scores = {str(p): round(float(v), 2) for p, v in zip(args.images, psnr(recon, x))}
    print(f"wrote {args.out}: PSNR (dB) {json.dumps(scores)}")
    return 0


def _add_pca(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache", type=Path, required=True, help="dataset cache folder (faceedit prepare)")
    p.add_argument("--latent-dim", type=int, default=128, help="components D (default: 128, the VAE's)")
    p.add_argument("--out", type=Path, default=None, help="also write the PCA as a bundle (kind pca)")
    p.add_argument("--seed", type=int, default=0, help="seed of the randomized SVD (default: 0)")


def _run_pca(args: argparse.Namespace) -> int:
    import json
    import time

    from faceedit.cache import Cache
    from faceedit.metrics import reconstruction_psnr
    from faceedit.pca import fit_pca

    cache = Cache.open(args.cache)
    t0 = time.perf_counter()
    pca = fit_pca(cache, args.latent_dim, seed=args.seed)
    fit_s = time.perf_counter() - t0
    figures = {"latent_dim": args.latent_dim, "fit_s": round(fit_s, 1),
               "val_psnr": round(reconstruction_psnr(pca, cache, "val"), 4)}
    if args.out is not None:
        from faceedit.bundle import save_bundle

        save_bundle(args.out, pca, {"cache": cache.hash, "metrics": figures})
    print(json.dumps(figures))
    return 0


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole parser, or (`only`) one whose other subcommands declare no options.

    Declaring a subcommand's options imports its config dataclass (and so torch), which costs
    seconds: `main` declares only the subcommand being run.
    """
    parser = argparse.ArgumentParser(
        prog="faceedit",
        description="Edit faces with attribute vectors in a VAE's latent space, and audit the edits.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text,
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        if only is None or name == only:
            globals()[f"_add_{name.replace('-', '_')}"](p)
            if name in WRITES_FOLDER and "--overwrite" not in p._option_string_actions:
                p.add_argument("--overwrite", action="store_true", help="replace --out even when it "
                               "holds files faceedit did not write (default: refuse, naming them)")
    return parser


# Subcommands whose --out is a folder (replaced atomically, and only when it is faceedit's own or
# with --overwrite); `run` writes one folder per stage under --out.
WRITES_FOLDER = ("run", "prepare", "synth", "vectors", "judge", "audit", "audit-classifier", "train", "pca")


def _check_out(args: argparse.Namespace) -> None:
    """Before any work: refuse an --out holding a user's files (a mistyped --out must not delete
    them), or, with --overwrite, mark it as replaceable."""
    from faceedit.files import check_replaceable, claim_dir

    if args.command not in WRITES_FOLDER or getattr(args, "out", None) is None:
        return
    if args.command == "run":
        from faceedit.pipeline import STAGE_FOLDERS

        outs = [args.out / name for name in STAGE_FOLDERS]
    else:
        outs = [args.out]
    for out in outs:
        if args.overwrite:
            claim_dir(out)
        else:
            check_replaceable(out)


def _add_run(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", type=Path, default=None, help="a CelebA folder in the official layout "
                   "(default: $CELEBA_DIR; with neither, synthetic faces are rendered: no download)")
    p.add_argument("--out", type=Path, default=Path("runs/main"), help="where every output goes: "
                   "cache, bundle, bank, judge, report, figures (default: runs/main)")
    p.add_argument("--profile", choices=("auto", "default", "quick", "tiny", "gpu", "gpu-128"),  # pipeline.PROFILES
                   default="auto", help="default: the 19,000 real faces on a 2-core CPU; quick: a "
                   "short run; tiny: seconds, for smoke tests; gpu: sized for GPU workers (a wider "
                   "VAE, batch 128 per GPU, a 3-minute training budget); gpu-128: the same at "
                   "128x128; their times: BENCHMARKS.md (default: auto, gpu when this machine has "
                   "CUDA, else default)")
    p.add_argument("--quick", dest="profile", action="store_const", const="quick",
                   help="same as --profile quick")
    p.add_argument("--workers", type=int, default=None, help="Ray training workers (default: one "
                   "per GPU of the machine or cluster, else 2 CPU workers)")
    p.add_argument("--gpu", choices=("auto", "yes", "no"), default="auto",
                   help="train on GPUs when the machine or cluster has them (default: auto)")
    p.add_argument("--address", default="", help="a Ray cluster to train on (default: $RAY_ADDRESS, "
                   "else a local Ray started for the run)")
    p.add_argument("--serve", action=argparse.BooleanOptionalAction, default=True,
                   help="open the editor when done; --no-serve stops after the report (default: serve)")
    p.add_argument("--host", default="127.0.0.1", help="editor address (default: 127.0.0.1)")
    p.add_argument("--port", type=int, default=7860, help="editor port (default: 7860)")
    _add_exposure(p)


def _run_run(args: argparse.Namespace) -> int:
    import os

    import torch

    from faceedit.pipeline import choose_profile, main_job

    data = args.data or (Path(os.environ["CELEBA_DIR"]) if os.environ.get("CELEBA_DIR") else None)
    if data is None:
        print("data: no --data or CELEBA_DIR given: rendering synthetic faces with real CelebA "
              "label rows (the no-download default)")
    else:
        print(f"data: CelebA folder {data}")
    profile = choose_profile(args.profile, torch.cuda.is_available())
    auth = None
    if args.serve:  # refuse an unprotected --host now, not after the whole job
        from ui.app import check_exposure, parse_auth

        auth = parse_auth(args.auth)
        check_exposure(args.host, False, auth, args.no_auth)
    print(f"profile: {profile.name}{' (CUDA found)' if args.profile == 'auto' and profile.name == 'gpu' else ''}; "
          f"outputs under {args.out}")

    def train_vae(cache: Path, out: Path, recipe, train_config) -> None:
        from workers.train import RayConfig, train_on_ray  # Ray is imported here only

        ray_config = RayConfig(gpu=args.gpu, address=args.address, storage=str(args.out / "ray"))
        train_on_ray(cache, out, recipe, train_config, args.workers, ray_config)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    timings = main_job(args.out, data, profile, train_vae, device).run()
    print(f"done in {sum(timings.values()) / 60:.1f} min. The audit report: "
          f"{(args.out / 'report' / 'report.html').resolve()}")
    if args.serve:
        from ui.app import serve  # Gradio is imported here only

        print(f"the editor: http://{args.host}:{args.port} (Ctrl-C stops it)")
        if data is None:  # a model of rendered faces: also offer the shipped real-face model
            print(f"the real-face model shipped with faceedit: http://{args.host}:{args.port + 1}")
        serve(args.out / "bundle", args.out / "bank", host=args.host, port=args.port,
              cache=args.out / "cache", auth=auth, no_auth=args.no_auth,
              also_shipped="this run's model (rendered faces)" if data is None else "")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(only=argv[0] if argv and argv[0] in COMMANDS else "")
    args = parser.parse_args(argv)
    run = globals()[f"_run_{args.command.replace('-', '_')}"]
    # Warnings (tiny cells, duplicate images...) name what they are about: one line each, without
    # the source line Python shows by default.
    warnings.formatwarning = lambda message, category, *_: f"warning: {message}\n"
    try:
        _check_out(args)
        return int(run(args) or 0)
    except (ValueError, FileNotFoundError) as e:
        # Library errors already name the file, field or value: show them without a traceback.
        print(f"faceedit {args.command}: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"\nfaceedit {args.command}: interrupted. {interrupted(args)}", file=sys.stderr)
        return 130


def interrupted(args: argparse.Namespace) -> str:
    """What an interrupted command saved, and how to go on."""
    out = getattr(args, "out", None)
    if args.command == "train" and args.workers >= 1:
        return _ray_checkpoints(args)
    if args.command == "train":
        log = args.log_dir or args.out.with_name(args.out.name + "-log")
        return (f"Nothing was saved: {out} is written only when training ends, and the in-process loop "
                f"(--workers 0) keeps no checkpoints; the metrics so far are in {log}. Run the command "
                "again to start over, or with --workers 1 (or more) to checkpoint every epoch and "
                "resume when rerun.")
    if args.command == "run":
        return (f"Finished stages are kept under {out} (each with its .stage.json) and are skipped when "
                "the same command runs again; an interrupted training resumes from its last checkpoint "
                f"in {out / 'ray'}.")
    if out is not None:
        return f"Nothing was written to {out} (it appears only when complete)."
    return "Nothing was written."


def _ray_checkpoints(args: argparse.Namespace) -> str:
    from faceedit.cache import Cache
    from faceedit.model import VAEConfig
    from faceedit.trainer import TrainConfig
    from workers.train import default_run_name

    try:
        cache = Cache.open(args.cache)
        name = args.run_name or default_run_name(
            args.out, cache.hash, dataclass_from_args(VAEConfig, args, image_size=cache.size),
            dataclass_from_args(TrainConfig, args), args.workers)
    except (ValueError, OSError):
        return f"Checkpoints, if any were made, are in {args.storage}; run the same command to resume."
    run = Path(args.storage) / name
    saved = sorted(run.glob("checkpoint_*")) if run.is_dir() else []
    if not saved:
        return (f"No checkpoint was made yet (run {name!r} in {args.storage}): run the same command "
                "again to start over.")
    return (f"{len(saved)} checkpoint(s) of run {name!r} are kept in {run} (the last: {saved[-1].name}); "
            f"{args.out} was not written. Run the same command again to resume from the last one.")


if __name__ == "__main__":
    sys.exit(main())
