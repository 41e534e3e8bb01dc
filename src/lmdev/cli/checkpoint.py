"""``lmdev checkpoint``: check and export training checkpoints."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

HELP = "verify a training checkpoint, or export its weights to one safetensors file"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("checkpoint", help=HELP, description=HELP + ". A checkpoint is a "
                       "step-NNNNNNNN folder under .lmdev/runs/<run>/checkpoints/.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    v = verbs.add_parser("verify", help="check every file against the checkpoint's manifest (exit 1 if not)")
    v.add_argument("path", metavar="CHECKPOINT")
    e = verbs.add_parser("export", help="write the weights (gathered from shards if sharded) as one safetensors file")
    e.add_argument("path", metavar="CHECKPOINT")
    e.add_argument("out", metavar="OUT.safetensors")
    e.add_argument("--sign", nargs="?", const="", default=None, metavar="KEY.pem",
                   help="sign OUT (OpenSSF model-signing) -> OUT.sig, with KEY.pem or your signing key "
                        "(lmdev secure keygen --signing); lmdev checks it whenever it loads OUT")
    return p


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError

    try:
        return _run(args)
    except OSError as exc:  # a name too long, a permission, a loop of links: the OS's word, one line
        where = exc.filename if exc.filename is not None else args.path
        raise LmdevError(f"{where}: {exc.strerror or exc}",
                         "give an existing step-NNNNNNNN checkpoint folder (and a writable OUT)") from None


def _run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError
    from lmdev.fsutil import check_target

    path = Path(args.path)
    if args.verb == "export":
        check_target(Path(args.out))  # before any reading: a folder, a device or a symlink is refused
        if args.sign is not None:  # a missing signing key fails before anything is written
            from lmdev.secure.signing import key_paths

            key = Path(args.sign) if args.sign else key_paths()[0]
            if not key.is_file():
                raise LmdevError(f"no signing key at {key}", "run `lmdev secure keygen --signing` or give --sign KEY.pem")
    if not (path / "manifest.json").exists() and not (path / "state.json").exists():
        raise LmdevError(f"{path} is not a checkpoint folder (no manifest.json)",
                         "give a step-NNNNNNNN folder under .lmdev/runs/<run>/checkpoints/")
    from lmdev.train import checkpoint as ckpt  # torch: only once the arguments are sound

    if args.verb == "verify":
        problem = ckpt.verify(path)
        if problem:
            print(f"{path}: CORRUPT — {problem}")
            return 1
        kind = "sharded (torch.distributed.checkpoint)" if ckpt.is_sharded(path) else "safetensors"
        kind += ", age-encrypted" if ckpt.is_encrypted(path) else ""
        print(f"{path}: ok ({kind}; every file matches its sha256)")
        return 0
    out = ckpt.export_safetensors(path, Path(args.out))
    print(f"wrote {out}")
    stale = out.with_name(out.name + ".sig")
    if args.sign is None and stale.is_file():  # the signature of the file this export replaced
        stale.unlink()
        print(f"removed {stale} (it signed the file this export replaced)")
    if args.sign is not None:
        from lmdev.secure.signing import sign

        print(f"signed {out} -> {sign(out, key)}")
    return 0
