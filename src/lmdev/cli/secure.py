"""``lmdev secure``: scan model files, encrypt and decrypt, sign and verify, the audit log, posture."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

HELP = "scan model files for code, encrypt, sign, audit log, security posture"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser("secure", help=HELP, description=HELP + ". Docs: docs/commands/secure.md.")
    verbs = p.add_subparsers(dest="verb", metavar="VERB", required=True)
    s = verbs.add_parser("scan", help="judge model files (folders recursively) against an allowlist; exit 1 if any is unsafe")
    s.add_argument("paths", nargs="+", metavar="PATH")
    s.add_argument("--json", action="store_true", help="print one JSON document")
    s.add_argument("--all", action="store_true", help="also list files that are not model formats")
    k = verbs.add_parser("keygen", help="create an age key (or, with --signing, a signing key pair)")
    k.add_argument("--out", type=Path, metavar="PATH", help="key file (default $LMDEV_HOME/keys/age.key)")
    k.add_argument("--keyring", action="store_true", help="store the age key in the OS keyring")
    k.add_argument("--signing", action="store_true", help="an EC P-256 key pair for sign / verify")
    k.add_argument("--force", action="store_true", help="replace an existing key")
    for verb, what in (("encrypt", "encrypt a file or folder (age format) -> PATH.age / PATH.tar.age"),
                       ("decrypt", "decrypt PATH.age (or PATH.tar.age, to a folder)")):
        e = verbs.add_parser(verb, help=what)
        e.add_argument("path", type=Path)
        e.add_argument("--out", type=Path, metavar="PATH")
        e.add_argument("--key", metavar="KEYFILE", help="age identity file (default: $LMDEV_AGE_KEY, "
                       "$LMDEV_AGE_KEY_FILE, the keyring, $LMDEV_HOME/keys/age.key)")
        if verb == "encrypt":
            e.add_argument("--recipient", "-r", action="append", default=[], metavar="age1...",
                           help="encrypt to this public key (default: your own key's)")
    for verb, what in (("sign", "sign a model folder or file (OpenSSF model-signing) -> DIR/model.sig or FILE.sig"),
                       ("verify", "verify a folder's or file's signature; exit 1 naming changed, added or removed files")):
        g = verbs.add_parser(verb, help=what)
        g.add_argument("path", type=Path, metavar="PATH")
        g.add_argument("--key", type=Path, metavar="PEM", help="private (sign) or public (verify) key")
        g.add_argument("--json", action="store_true", help="print one JSON document")
    a = verbs.add_parser("audit", help="show or verify the hash-chained audit log")
    av = a.add_subparsers(dest="audit_verb", metavar="show|verify", required=True)
    show = av.add_parser("show", help="list entries")
    show.add_argument("--since", metavar="WHEN", help="ISO date/time, or a duration like 2h, 3d")
    show.add_argument("--json", action="store_true")
    show.add_argument("--limit", type=int, default=50, help="newest N entries (default 50, 0 = all)")
    ver = av.add_parser("verify", help="check the chain; exit 1 naming the first bad entry")
    ver.add_argument("--head", metavar="HASH", help="the head hash recorded earlier (catches a full rewrite)")
    ver.add_argument("--json", action="store_true")
    c = verbs.add_parser("check", help="the project's security posture; exit 1 on errors")
    c.add_argument("root", nargs="?", default=".", type=Path, help="project folder (default .)")
    c.add_argument("--fix", action="store_true", help="scrub secrets from the store, chmod it 700")
    c.add_argument("--json", action="store_true")
    return p


def run(args: argparse.Namespace) -> int:
    handler = {"scan": _scan, "keygen": _keygen, "encrypt": _encrypt, "decrypt": _decrypt, "sign": _sign,
               "verify": _verify, "audit": _audit, "check": _check}[args.verb]
    return handler(args)


def _console() -> Any:
    from rich.console import Console

    return Console()


def _scan(args: argparse.Namespace) -> int:
    from rich.markup import escape
    from rich.table import Table

    from lmdev.secure import scan_paths

    results = scan_paths(args.paths)
    unsafe = [r for r in results if r.verdict == "unsafe"]
    if args.json:
        print(json.dumps({"files": [r.to_json() for r in results], "unsafe": len(unsafe),
                          "scanned": sum(r.verdict != "skipped" for r in results)}))
        return 1 if unsafe else 0
    table = Table("verdict", "file", "format", "why")
    for r in results:
        if r.verdict == "skipped" and not args.all:
            continue
        colour = {"safe": "green", "unsafe": "bold red", "skipped": "dim"}[r.verdict]
        why = "; ".join(_describe(f) for f in r.findings[:3]) + (" ..." if len(r.findings) > 3 else "")
        table.add_row(f"[{colour}]{r.verdict}[/]", escape(r.path), r.format, escape(why or r.note))
    console = _console()
    console.print(table)
    console.print(f"{len(unsafe)} unsafe of {sum(r.verdict != 'skipped' for r in results)} model files")
    return 1 if unsafe else 0


def _describe(f: Any) -> str:
    where = f" [{f.member}]" if f.member else ""
    at = f" @ byte {f.position}" if f.position is not None else ""
    return f"{f.message}{where}{at}"


def _keygen(args: argparse.Namespace) -> int:
    if args.signing:
        from lmdev.secure.signing import keygen_signing

        priv, pub = keygen_signing(args.out, force=args.force)
        print(f"signing key: {priv} (private, 0600)\npublic key:  {pub} (give it to whoever verifies)")
        return 0
    from lmdev.secure.crypto import keygen

    pair = keygen(args.out, use_keyring=args.keyring, force=args.force)
    print(f"age key written to {pair.source}\npublic key (recipient): {pair.recipient}")
    return 0


def _encrypt(args: argparse.Namespace) -> int:
    from lmdev.secure.crypto import encrypt

    print(f"wrote {encrypt(args.path, args.out, args.recipient, args.key)}")
    return 0


def _decrypt(args: argparse.Namespace) -> int:
    from lmdev.secure.crypto import decrypt

    print(f"wrote {decrypt(args.path, args.out, args.key)}")
    return 0


def _sign(args: argparse.Namespace) -> int:
    from lmdev.secure.signing import sign

    sig = sign(args.path, args.key)
    if args.json:
        print(json.dumps({"folder": str(args.path), "signature": str(sig)}))
    else:
        print(f"signed {args.path} -> {sig}")
    return 0


def _verify(args: argparse.Namespace) -> int:
    from rich.markup import escape

    from lmdev.secure.signing import verify

    result = verify(args.path, args.key)
    if args.json:
        print(json.dumps({"folder": result.folder, "ok": result.ok, "problems": result.problems}))
    elif result.ok:
        _console().print(f"[green]ok[/]: {escape(result.folder)} matches its signature")
    else:
        console = _console()
        console.print(f"[bold red]FAILED[/]: {escape(result.folder)}")
        for problem in result.problems:
            console.print(f"  {escape(problem)}")
    return 0 if result.ok else 1


def _since(text: str | None) -> float | None:
    from lmdev.errors import LmdevError

    if not text:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].replace(".", "", 1).isdigit():
        return datetime.now(timezone.utc).timestamp() - float(text[:-1]) * units[text[-1]]
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise LmdevError(f"--since {text!r} is not a date or a duration", "use e.g. 2026-01-31, 2h or 3d") from None
    return (when if when.tzinfo else when.replace(tzinfo=timezone.utc)).timestamp()


def _audit(args: argparse.Namespace) -> int:
    from lmdev.secure import audit

    if args.audit_verb == "verify":
        result = audit.verify(head=args.head)
        if args.json:
            from dataclasses import asdict

            print(json.dumps(asdict(result)))
        elif result.ok:
            torn = " (the last entry is torn: an interrupted write)" if result.torn_tail else ""
            print(f"ok: {result.entries} entries, chain intact{torn}; head {result.head}")
        else:
            print(f"TAMPERED: entry {result.first_bad} (line {result.first_bad} of {audit.log_path()}): "
                  f"{result.problem}; {result.entries} entries before it are intact")
        return 0 if result.ok else 1
    entries = list(audit.entries(since=_since(args.since)))
    if args.limit:
        entries = entries[-args.limit:]
    if args.json:
        print(json.dumps({"entries": entries}))
        return 0
    _print_entries(entries)
    return 0


def _print_entries(entries: list[dict[str, Any]]) -> None:
    from rich.markup import escape
    from rich.table import Table

    skip = {"prev", "hash", "seq", "time", "event", "user", "host", "pid"}
    table = Table("#", "time", "event", "user", "details")
    for e in entries:
        details = ", ".join(f"{k}={v}" for k, v in e.items() if k not in skip)
        table.add_row(str(e.get("seq")), str(e.get("time", ""))[:19], escape(str(e.get("event"))),
                      escape(str(e.get("user"))), escape(details[:200]))
    _console().print(table)


def _check(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from rich.markup import escape

    from lmdev.secure.posture import check
    from lmdev.track.store import home

    posture = check(args.root, home(), fix=args.fix)
    if args.json:
        print(json.dumps({"root": posture.root, "home": posture.home, "scanned": posture.scanned,
                          "errors": posture.errors, "issues": [asdict(i) for i in posture.issues]}))
        return 1 if posture.errors else 0
    console = _console()
    for i in posture.issues:
        colour = "green" if i.fixed else ("bold red" if i.severity == "error" else "yellow")
        state = "fixed" if i.fixed else i.severity
        console.print(f"[{colour}]{state}[/] {i.check}: {escape(i.path)} — {escape(i.message)}"
                      + ("" if i.fixed else f" (fix: {escape(i.fix)})"))
    console.print(f"{posture.scanned} model files scanned; {posture.errors} errors, "
                  f"{sum(i.severity == 'warning' for i in posture.issues)} warnings")
    if not posture.issues:
        print("no issues found", file=sys.stderr)
    return 1 if posture.errors else 0
