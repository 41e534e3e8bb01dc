"""``lmdev setup``: from a bare or broken machine to a verified, locked framework environment.

    lmdev setup [STACK ...]            plan, install, lock, verify (torch by default)
    lmdev setup export --dockerfile    exports from the lock
    lmdev setup bundle OUT.tar         an offline wheelhouse of the lock
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

HELP = "plan, install, lock and verify the framework environment for this machine"


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "setup", help=HELP,
        description="Choose per framework the build this machine needs (driver, every GPU's "
        "architecture, OS, Python), install it with uv (or pip) from the configured indexes, "
        "write a pylock.toml and verify it on every device. `lmdev setup export ...` and "
        "`lmdev setup bundle OUT.tar` work from the lock. Exit 0: set up and verified; 1: "
        "verification failed; 2: bad input.",
        epilog="Stacks: torch (default), lightning, keras, tensorflow, jax, hf. Docs: docs/commands/setup.md.")
    p.add_argument("stacks", nargs="*", metavar="STACK",
                   help="what to install; or `export` / `bundle OUT.tar`")
    p.add_argument("--python", help="Python version of a new environment (e.g. 3.12)")
    p.add_argument("--venv", type=Path, metavar="PATH",
                   help="the environment to set up (default: the active one, else ./.venv)")
    p.add_argument("--system", action="store_true", help="install into this interpreter, not a venv")
    p.add_argument("--installer", choices=("uv", "pip"),
                   help="default: uv when it is installed (it is a dependency of lmdev), else pip")
    p.add_argument("--torch-index", metavar="URL",
                   help="the PyTorch index ({backend} is replaced by cpu, cu128, ...)")
    p.add_argument("--for", dest="for_profile", metavar="PROFILE",
                   help="plan/lock/bundle for another machine: a backend (cpu, cu126, cu128, cu130, "
                   "rocm6.4, mps, xpu) or a known machine (gtx1080ti, rtx5090, h100-driver535, ...)")
    p.add_argument("--platform", metavar="TRIPLE",
                   help="with --for: the target platform of the lock, as uv names it "
                   "(x86_64-manylinux_2_28, aarch64-manylinux_2_28, aarch64-apple-darwin, ...)")
    p.add_argument("--dry-run", action="store_true", help="show the plan; change nothing")
    p.add_argument("--json", action="store_true", help="print one JSON document (docs/schemas/setup.md)")
    p.add_argument("--verify", action="store_true", help="only verify the environment (install nothing)")
    p.add_argument("--no-verify", action="store_true", help="skip the verification after installing")
    p.add_argument("--verify-timeout", type=float, default=180.0, metavar="SECONDS",
                   help="time limit of each verification step (default: 180)")
    p.add_argument("--repair", action="store_true", help="fix what doctor finds in the environment")
    p.add_argument("--yes", "-y", action="store_true", help="apply --repair's changes without asking")
    p.add_argument("--frozen", action="store_true",
                   help="make the environment hold exactly the lock (hashes checked; other packages removed)")
    p.add_argument("--upgrade", action="store_true",
                   help="resolve again even though the lock still fits the plan (picks up newer releases)")
    p.add_argument("--from-bundle", type=Path, metavar="TAR", help="install from an offline bundle")
    ex = p.add_mutually_exclusive_group()
    for fmt in ("dockerfile", "devcontainer", "sbatch", "requirements"):
        ex.add_argument(f"--{fmt}", dest="export_format", action="store_const", const=fmt,
                        help=f"with `export`: write a {fmt}")
    p.add_argument("-o", "--output", type=Path, metavar="PATH", help="with `export`: write to PATH")
    return p


def _options(args: argparse.Namespace, stacks: list[str]) -> Any:
    from lmdev.setup.engine import SetupOptions
    from lmdev.setup.installer import default_installer

    return SetupOptions(stacks=stacks, venv=args.venv, python=args.python, system=args.system,
                        installer=args.installer or default_installer(), for_profile=args.for_profile, platform=args.platform,
                        torch_index=args.torch_index, verify=not args.no_verify,
                        verify_timeout=args.verify_timeout, frozen=args.frozen, upgrade=args.upgrade)


def run(args: argparse.Namespace) -> int:
    from lmdev.errors import LmdevError

    stacks = list(args.stacks)
    if stacks[:1] == ["export"]:
        return _export(args, stacks[1:])
    if stacks[:1] == ["bundle"]:
        return _bundle(args, stacks[1:])
    modes = [m for m in ("dry_run", "verify", "repair", "frozen") if getattr(args, m)] + (
        ["from_bundle"] if args.from_bundle else [])
    if len(modes) > 1:
        raise LmdevError("--" + " and --".join(m.replace("_", "-") for m in modes) + " cannot be combined",
                         "choose one")
    if args.for_profile and (args.verify or args.repair or args.frozen or args.from_bundle):
        raise LmdevError("--for makes a plan or lock for another machine; it cannot install or verify here",
                         "drop --for, or use it with --dry-run, plain setup, or `bundle`")
    if args.platform and not args.for_profile:
        raise LmdevError("--platform needs --for PROFILE", "e.g. --for cu128 --platform aarch64-manylinux_2_28")
    opts = _options(args, stacks)
    if args.dry_run:
        from lmdev.setup.engine import dry_run

        plan = dry_run(opts)
        if args.json:
            sys.stdout.write(plan.to_json())
        else:
            render_plan(plan)
        return 0
    if args.repair:
        return _repair(args, opts)
    return _install(args, opts)


def _install(args: argparse.Namespace, opts: Any) -> int:
    plain = not (args.verify or args.from_bundle or args.frozen)
    if plain:  # nothing to do: answer without the installer, the display or the verification
        from lmdev.setup.engine import noop_result

        done = noop_result(opts)
        if done is not None:
            _print_result(args, done, render_noop)
            return 0
        return _setup_while_showing(args, opts)
    from rich.console import Console

    from lmdev.setup.engine import run_frozen, verify_only

    err = Console(stderr=True, highlight=False)
    with err.status("lmdev setup", spinner="dots") as status:
        def say(text: str) -> None:
            status.update(_escape(text))
            if not args.json:
                err.print(f"[dim]{_escape(text)}[/]")

        if args.verify:
            result = verify_only(opts)
        elif args.from_bundle:
            from lmdev.setup.bundle import install_from_bundle

            result = install_from_bundle(args.from_bundle, opts)
        else:
            result = run_frozen(opts, say)
    _print_result(args, result, render_result)
    return 0 if result.ok else 1


def _setup_while_showing(args: argparse.Namespace, opts: Any) -> int:
    """A plain setup: the resolver and installer work in a thread while the plan is shown, so the
    display's start-up overlaps their work. The plan shown is the one installed (same facts)."""
    import queue
    import threading

    from lmdev.setup.engine import dry_run, run_setup

    plan = None if args.json else dry_run(opts)  # reads the machine once; the worker reuses it
    messages: queue.Queue[str] = queue.Queue()
    outcome: dict[str, Any] = {}

    def work() -> None:
        try:
            outcome["result"] = run_setup(opts, messages.put)
        except BaseException as exc:  # handed to the main thread, raised there
            outcome["error"] = exc

    worker = threading.Thread(target=work, name="lmdev-setup")
    worker.start()
    early: list[str] = []  # the worker says what it does just before it starts the installer:
    while worker.is_alive() and not early:  # only then load the display (one GIL for both)
        try:
            early.append(messages.get(timeout=0.02))
        except queue.Empty:
            continue
    from rich.console import Console

    if plan is not None:
        render_plan(plan)
    err = Console(stderr=True, highlight=False)
    with err.status("lmdev setup", spinner="dots") as status:
        while early or worker.is_alive() or not messages.empty():
            try:
                text = early.pop(0) if early else messages.get(timeout=0.05)
            except queue.Empty:
                continue
            status.update(_escape(text))
            if not args.json:
                err.print(f"[dim]{_escape(text)}[/]")
    if "error" in outcome:
        raise outcome["error"]
    _print_result(args, outcome["result"], render_result)
    return 0 if outcome["result"].ok else 1


def _print_result(args: argparse.Namespace, result: Any, render: Any) -> None:
    if args.json:
        json.dump(result.to_dict(), sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        render(result)


def render_noop(result: Any) -> None:
    """Plain lines (no display library to load): nothing changed."""
    for env in result.environments:
        backends = ", ".join(f"{fw} {b}" for fw, b in sorted(
            next(e.backends for e in result.plan.environments if e.name == env.name).items()))
        checked = " and verified earlier (`lmdev setup --verify` runs it again)" if env.verified_before else ""
        print(f"{env.name}: {env.prefix} already holds {Path(env.lock).name} ({backends}){checked}; "
              "nothing to do")


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def render_plan(plan: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(highlight=False)
    m = plan.machine
    gpus = ", ".join(f"{g['count']}x {g['name']}" for g in m.get("gpus", [])) or "no GPU"
    console.print(f"[bold]Setup plan[/] for {_escape(m['name'])}: {m['os']}/{m['arch']}"
                  f"{' (WSL2)' if m.get('wsl') else ''}, Python {plan.python}, {_escape(gpus)}"
                  + (f", driver {m['driver']} (CUDA {m['cuda_driver']})" if m.get("driver") else ""))
    table = Table(show_lines=False)
    for col in ("environment", "framework", "backend", "install"):
        table.add_column(col)
    for env in plan.environments:
        specs = ", ".join(r.spec for r in env.requirements)
        for i, (fw, backend) in enumerate(sorted(env.backends.items())):
            table.add_row(".venv" + env.suffix if i == 0 else "", fw, backend, _escape(specs) if i == 0 else "")
    console.print(table)
    for c in plan.choices:
        console.print(f"  [cyan]{c.framework} {c.what}[/] = [bold]{_escape(c.value)}[/]: {_escape(c.reason)} "
                      f"[dim](source: {_escape(c.source)})[/]")
    for w in plan.warnings:
        console.print(f"  [yellow]warning:[/] {_escape(w)}")
    pinned = sorted({r.pinned_index for e in plan.environments for r in e.requirements if r.pinned_index})
    for url in pinned:
        console.print(f"  the torch family comes only from [bold]{_escape(url)}[/]")


def render_result(result: Any) -> None:
    from rich.console import Console

    console = Console(highlight=False)
    for env in result.environments:
        how = " from the existing lock" if env.from_lock else ""
        console.print(f"[bold]{env.name}[/]: {env.action}{how} — {_escape(env.prefix or '')} (lock {_escape(env.lock)})")
        for d in env.differences:
            console.print(f"  differed from the lock: {_escape(d.describe())}")
        for name, before, after in env.changes:
            console.print(f"  {name}: {before or '-'} -> {after or 'removed'}")
        if env.verified_before:
            console.print("  verified earlier on this very lock (`lmdev setup --verify` runs it again)")
        elif env.verification:
            for s in env.verification.steps:
                mark = "[green]ok[/]" if s.ok else ("[dim]skipped[/]" if s.skipped else "[red]FAILED[/]")
                line = f"  verify {s.framework} {s.name}: {mark} ({s.seconds:.1f} s)"
                if s.cause:
                    line += f" — {_escape(s.cause)}; fix: {_escape(s.fix or '')}"
                console.print(line)
    console.print("[green]Environment ready.[/]" if result.ok else "[red]Verification failed.[/]")


def _export(args: argparse.Namespace, rest: list[str]) -> int:
    from lmdev.errors import LmdevError
    from lmdev.fsutil import atomic_write_text
    from lmdev.setup.export import export
    from lmdev.setup.lock import lock_name, read_lock, read_plan_record
    from lmdev.setup.plan import SetupPlan

    if rest or not args.export_format:
        raise LmdevError("usage: lmdev setup export --dockerfile|--devcontainer|--sbatch|--requirements [-o PATH]",
                         "choose one format")
    project = Path.cwd()
    record = read_plan_record(project)
    if not record.get("plan"):
        raise LmdevError("no setup plan here", "run `lmdev setup` first (it writes pylock.toml and setup-plan.json)")
    plan = SetupPlan.from_dict(record["plan"])
    lock = read_lock(project / lock_name(args.for_profile or "main"))
    text = export(args.export_format, plan, lock)
    if args.output:
        atomic_write_text(args.output, text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text)
    return 0


def _bundle(args: argparse.Namespace, rest: list[str]) -> int:
    from lmdev.errors import LmdevError
    from lmdev.setup.bundle import build_bundle
    from lmdev.setup.engine import run_setup

    if len(rest) != 1:
        raise LmdevError("usage: lmdev setup bundle OUT.tar [--for PROFILE]", "name one output file")
    if args.for_profile:
        run_setup(_options(args, []))  # the lock for that profile, resolved here
    info = build_bundle(Path(rest[0]), Path.cwd(), args.for_profile)
    if args.json:
        json.dump(info.__dict__, sys.stdout, indent=2, sort_keys=True)
        sys.stdout.write("\n")
    else:
        print(f"wrote {info.path}: {info.wheels} wheels, {info.bytes / 1e6:.1f} MB, "
              f"environments {', '.join(info.environments)}")
    return 0


def _repair(args: argparse.Namespace, opts: Any) -> int:
    from rich.console import Console

    from lmdev.catalog.cuda import version_tuple
    from lmdev.diagnose.report import doctor
    from lmdev.errors import LmdevError
    from lmdev.setup import installer as inst
    from lmdev.setup.engine import preview_changes, run_setup, target_prefix
    from lmdev.setup.repair import env_source, plan_repair, uninstall
    from lmdev.setup.verify import python_of

    console = Console(highlight=False)
    prefix = target_prefix(opts)
    if not (prefix / "pyvenv.cfg").is_file() and not opts.system:
        raise LmdevError(f"no environment at {prefix}", "run `lmdev setup` to create one, or pass --venv")
    report = doctor(env_source(prefix))
    torch = report.facts.software.torch
    major = version_tuple(torch.cuda)[0] if torch and torch.cuda else None
    rp = plan_repair(report.findings, prefix, major)
    if not rp.needed:
        console.print("Nothing to repair: doctor finds no problem setup can fix.")
        return 0
    opts.stacks = rp.stacks
    opts.facts = report.facts
    for f in rp.findings:
        console.print(f"  [red]{f.id}[/]: {_escape(f.title)}")
    changes = preview_changes(opts)
    console.print("[bold]Package changes:[/]")
    for name in rp.uninstall:
        console.print(f"  remove {name}")
    for name, before, after in changes:
        console.print(f"  {name}: {before or '-'} -> {after}")
    if not args.yes:
        if not sys.stdin.isatty():
            raise LmdevError("--repair needs confirmation", "run it in a terminal, or pass --yes")
        if input("Apply these changes? [y/N] ").strip().lower() not in ("y", "yes"):
            return 1
    uninstall(opts.installer, inst.Target(python_of(prefix), "", prefix), rp.uninstall)
    result = run_setup(opts)
    recheck = doctor(env_source(prefix))
    left = [f for f in recheck.findings if f.id in {g.id for g in rp.findings}]
    render_result(result)
    for f in left:
        console.print(f"  [red]still: {f.id}[/] {_escape(f.title)} — {_escape(f.fix)}")
    return 0 if result.ok and not left else 1
