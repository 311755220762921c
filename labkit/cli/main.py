"""``labkit`` — the command line.

Every error is a :class:`labkit.errors.LabkitError` that explains itself: the CLI prints
what happened, the probable cause and what to do, without a traceback (exit status 2).
``LABKIT_DEBUG=1`` shows the traceback as well.
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import labkit.cli.doctor as doctor
from labkit import images, tracks
from labkit.errors import LabkitError, LabStateError
from labkit.spec import json_schema

# Commands that parse their own arguments (and their own --help).
_DELEGATED = {"replay": ("labkit.analysis.replay", "main"),
              "release": ("labkit.grading", "release_main"),
              "grade": ("labkit.grading", "grade_main")}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in _DELEGATED:
        import importlib
        module, function = _DELEGATED[argv[0]]
        return getattr(importlib.import_module(module), function)(argv[1:])
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 1
    try:
        return args.func(args) or 0
    except LabkitError as exc:
        if os.environ.get("LABKIT_DEBUG"):
            raise
        print(f"labkit: {exc.explain()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labkit: interrupted; whatever was started has been taken down.", file=sys.stderr)
        return 130


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labkit", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(metavar="COMMAND")

    up = sub.add_parser("up", help="bring a lab up and leave it running")
    up.add_argument("lab", help="a lab name (first-call) or a lab file path")
    up.add_argument("--track", choices=tracks.NAMES, default=tracks.DEFAULT.name,
                    help="modern = Asterisk 22 + PJSIP; legacy = Asterisk 16 + chan_sip")
    up.add_argument("--name", help="run under another name (two copies side by side)")
    up.add_argument("--no-build", action="store_true",
                    help="fail instead of building a missing lab image")
    up.add_argument("--no-wait", action="store_true",
                    help="do not wait for the phones to register (labs broken on purpose, e.g. "
                         "home-pbx before its port forwards)")
    up.set_defaults(func=_up)

    down = sub.add_parser("down", help="take a running lab down")
    down.add_argument("name", nargs="?", help="lab name (default: the only one running)")
    down.set_defaults(func=_down)

    status = sub.add_parser("status", help="hosts, daemons and registrations of running labs")
    status.add_argument("name", nargs="?")
    status.add_argument("--json", action="store_true")
    status.set_defaults(func=_status)

    cli = sub.add_parser("cli", help='run an Asterisk CLI command: labkit cli "pjsip show endpoints"')
    cli.add_argument("command", nargs="+")
    cli.add_argument("--lab", help="lab name (default: the only one running)")
    cli.set_defaults(func=_cli)

    clean = sub.add_parser("clean", help="remove everything recorded by crashed labs")
    clean.add_argument("name", nargs="?", help="only this lab (default: every recorded lab)")
    clean.set_defaults(func=_clean)

    doc = sub.add_parser("doctor", help="check that this machine can run labs")
    doc.set_defaults(func=_doctor)

    img = sub.add_parser("images", help="build, list or remove lab images")
    img_sub = img.add_subparsers(metavar="ACTION")
    build = img_sub.add_parser("build", help="build (or re-use) the given images")
    build.add_argument("images", nargs="*", metavar="IMAGE",
                       help=f"{' and/or '.join(images.RECIPES)} (default: all); an image is named "
                            "as the track it serves")
    build.add_argument("--force", action="store_true", help="rebuild even if cached")
    build.set_defaults(func=_images_build)
    lst = img_sub.add_parser("list", help="cached images")
    lst.set_defaults(func=_images_list)
    rm = img_sub.add_parser("rm", help="remove cached images")
    rm.add_argument("image", nargs="?", choices=sorted(images.RECIPES))
    rm.add_argument("--stale", action="store_true", help="only images of older recipes")
    rm.set_defaults(func=_images_rm)
    img.set_defaults(func=lambda a: img.print_help() or 1)

    room = sub.add_parser("classroom", help="a whole class: the student image, one container per student")
    room_sub = room.add_subparsers(metavar="ACTION")
    room_img = room_sub.add_parser("image", help="build, list or remove the student image")
    room_img_sub = room_img.add_subparsers(metavar="ACTION")
    room_build = room_img_sub.add_parser("build", help="build (or re-use) the student image")
    room_build.add_argument("--force", action="store_true", help="rebuild even if one of the same key exists")
    room_build.set_defaults(func=_classroom_image_build)
    room_img_sub.add_parser("list", help="the student images").set_defaults(func=_classroom_image_list)
    room_rm = room_img_sub.add_parser("rm", help="remove student images")
    room_rm.add_argument("tag", nargs="?", help="one image (default: all of them)")
    room_rm.set_defaults(func=_classroom_image_rm)
    room_img.set_defaults(func=lambda a: room_img.print_help() or 1)
    room_sub.add_parser("clean", help="remove every student container, volume and network the kit made"
                        ).set_defaults(func=_classroom_clean)
    room.set_defaults(func=lambda a: room.print_help() or 1)

    aud = sub.add_parser("audit", help="weak settings of sip.conf/pjsip.conf/extensions.conf "
                                       "and certificates, with why and the fix")
    aud.add_argument("paths", nargs="+", metavar="PATH",
                     help="sip.conf, pjsip.conf, extensions.conf, or a folder holding them "
                          "and/or certificates and keys")
    aud.add_argument("--json", action="store_true", help="findings as JSON")
    aud.add_argument("--fail-on", choices=("high", "medium", "low", "never"), default="high",
                     help="exit status 1 when a finding is this severe or worse (default high)")
    aud.set_defaults(func=_audit)

    schema = sub.add_parser("schema", help="print the JSON schema of lab files")
    schema.set_defaults(func=lambda a: print(json.dumps(json_schema(), indent=2, sort_keys=True,
                                                        ensure_ascii=False)))

    # Listed for --help; main() hands their arguments to their own parsers (_DELEGATED).
    sub.add_parser("replay", help="analyse a capture: ladders, streams, report (no root)")
    sub.add_parser("release", help="student copies of notebooks, without solutions")
    sub.add_parser("grade", help="grade student notebooks: grades.csv and feedback per student")
    return parser


# -- commands ---------------------------------------------------------------------------

def _up(args) -> int:
    from labkit.lab import Lab
    lab = Lab.load(args.lab, track=args.track, name=args.name)
    lab.up(build_images=not args.no_build, wait_registered=not args.no_wait)
    lab.detach()
    _print_status(lab.status())
    print(f"\nLab {lab.name} is up ({lab.track} track). `labkit down {lab.name}` takes it down.")
    return 0


def _down(args) -> int:
    from labkit.lab import Lab, clean_record
    from labkit.state import LabRecord
    try:
        lab = Lab.attach(args.name)
    except LabkitError:
        record = LabRecord.load(args.name) if args.name else None
        if record is None:
            raise
        # The record exists but the lab cannot be rebuilt from it (lab file moved, image
        # removed): remove what it lists anyway.
        removed = clean_record(record)
        print(f"Lab {args.name}: removed {len(removed)} leftover(s).")
        return 0
    lab.down()
    print(f"Lab {lab.name} is down.")
    return 0


def _status(args) -> int:
    from labkit.lab import Lab
    from labkit.state import recorded_labs
    records = recorded_labs()
    if args.name:
        records = [r for r in records if r.name == args.name]
        if not records:
            raise LabStateError(f"No lab named {args.name!r} is running.")
    statuses = []
    for record in records:
        try:
            statuses.append(Lab.attach(record.name).status())
        except LabkitError as exc:
            statuses.append({"lab": record.name, "error": exc.message,
                             "hint": "`labkit clean " + record.name + "`"})
    if args.json:
        print(json.dumps(statuses, indent=2))
    elif not statuses:
        print("No lab is running.")
    for status in statuses if not args.json else []:
        _print_status(status)
    return 0


def _print_status(status: dict) -> None:
    if "error" in status:
        print(f"Lab {status['lab']}: {status['error']} ({status['hint']})")
        return
    print(f"Lab {status['lab']} ({status['track']} track) — files in {status['dir']}")
    print("  hosts:")
    for host, addresses in status["hosts"].items():
        print(f"    {host:<12} {', '.join(addresses)}")
    print("  daemons:")
    for daemon, state in status["daemons"].items():
        print(f"    {daemon:<20} {state}")
    for box, settings in status.get("boxes", {}).items():
        print(f"  box {box}: " + "; ".join(f"{k} {v}" for k, v in settings.items()))
    print("  registrations:")
    if not status["registrations"]:
        print("    (none)")
    for extension, contact in status["registrations"].items():
        print(f"    {extension:<12} {contact}")


def _cli(args) -> int:
    from labkit.lab import Lab
    lab = Lab.attach(args.lab)
    print(lab.pbx.cli(" ".join(args.command)), end="")
    return 0


def _clean(args) -> int:
    from labkit.lab import clean_record
    from labkit.lab.cleanup import unrecorded_leftovers
    from labkit.state import LabRecord, recorded_labs
    records = [LabRecord.load(args.name)] if args.name else recorded_labs()
    records = [r for r in records if r is not None]
    for record in records:
        removed = clean_record(record)
        print(f"Lab {record.name}: removed {len(removed)} leftover(s)"
              + (":\n  " + "\n  ".join(removed) if removed else "."))
    if not records:
        print("No lab is recorded: nothing to clean.")
    strays = unrecorded_leftovers(recorded_labs())
    if strays:
        print("Named like labkit's but recorded by no lab here (not touched; another LABKIT_HOME, "
              "or made by hand?):\n  " + "\n  ".join(strays)
              + "\nRemove a namespace with `ip netns delete NAME`, a process with `kill PID`, "
                "if they are yours.")
    return 0


def _doctor(args) -> int:
    checks = doctor.run_checks()
    for check in checks:
        mark = {"ok": "ok  ", "warn": "warn", "fail": "FAIL"}[check.level]
        print(f"[{mark}] {check.name}: {check.detail}")
        if check.hint and check.level != "ok":
            print(f"       → {check.hint}")
    failed = [c for c in checks if c.level == "fail"]
    print(f"\n{len(checks) - len(failed)}/{len(checks)} checks passed"
          + ("; live labs cannot run until the failures are fixed." if failed else "."))
    return 1 if failed else 0


def _audit(args) -> int:
    from labkit.audit import SEVERITIES, audit_with_notes, report
    findings, notes = audit_with_notes(args.paths)
    print(report.as_json(findings, notes) if args.json else report.text(findings, notes), end="")
    if args.fail_on == "never":
        return 0
    worst = SEVERITIES[:SEVERITIES.index(args.fail_on) + 1]
    return 1 if any(f.severity in worst for f in findings) else 0


def _images_build(args) -> int:
    for image in args.images or list(images.RECIPES):
        info = images.build_image(image, force=args.force, progress=True)
        print(f"{image}: {info.path} ({info.size / 1e6:.0f} MB)")
    return 0


def _images_list(args) -> int:
    infos = images.list_images()
    if not infos:
        print(f"No lab image in {images.cache_dir()}. `labkit images build` makes them.")
    for info in infos:
        print(f"{info.track:<7} {info.key}  {info.state:<8} {info.size / 1e6:6.0f} MB  "
              f"{', '.join(f'{k} {v}' for k, v in sorted(info.versions.items()))}")
    return 0


def _images_rm(args) -> int:
    removed = images.remove_image(args.image, stale_only=args.stale)
    print("\n".join(f"removed {p}" for p in removed) or "nothing to remove")
    return 0




def _classroom_image_build(args) -> int:
    from labkit.classroom import image
    built = image.build(force=args.force, progress=True)
    print(f"{built.tag}: {', '.join(f'{k} {v}' for k, v in built.versions.items())}")
    return 0


def _classroom_image_list(args) -> int:
    from labkit.classroom import image
    rows = image.list_images()
    if not rows:
        print("No student image. `labkit classroom image build` makes it.")
    for row in rows:
        print(f"{row['tag']}  {row['size'] / 1e6:6.0f} MB  {row['created']}")
    return 0


def _classroom_image_rm(args) -> int:
    from labkit.classroom import image
    print("\n".join(f"removed {tag}" for tag in image.remove(args.tag)) or "nothing to remove")
    return 0


def _classroom_clean(args) -> int:
    from labkit.classroom import container
    removed = container.clean()
    print("\n".join(f"removed {kind[:-1]} {name}" for kind, names in removed.items() for name in names)
          or "nothing to remove")
    return 0
