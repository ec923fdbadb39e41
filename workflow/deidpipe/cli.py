"""``deidpipe``: the small command line the Snakemake rules call, plus tools for people.

For people: ``deidpipe approve SUBJECT SESSION --by NAME`` approves (``--reject``: rejects) a
warned session after reading its warnings, so that it is uploaded; ``deidpipe keyword WORD``
looks up DICOM keywords (``--csv`` prints rows ready to paste into a profile CSV);
``deidpipe make-demo DIR`` rebuilds the synthetic demo data.
"""

import argparse
import json
import os
import sys
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from deidpipe import paths
from deidpipe.errors import PipelineError

LABEL_OPTIONS = ("group", "project", "subject", "session")


def _labels(args: argparse.Namespace) -> dict[str, str]:
    """The labels given as options ('' where not given, or where the command has none)."""
    return {key: getattr(args, key, None) or "" for key in LABEL_OPTIONS}


def _add_required(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add required ``--name VALUE`` options (paths and labels the rules always pass)."""
    for name in names:
        parser.add_argument(f"--{name}", required=True)


FOLDER_HELP = {"--dicom-dir": "default: the source folder the manifest names",
               "--staged-dir": "default: beside the manifest, named after it"}


def _add_labels_and_folders(parser: argparse.ArgumentParser, *folders: str) -> None:
    """The labels and folders a command reads from the manifest unless they are given."""
    for name in LABEL_OPTIONS:
        parser.add_argument(f"--{name}", default="",
                            help="default: as the manifest's place names it")
    for folder in folders:
        parser.add_argument(folder, help=FOLDER_HELP[folder])


def _add_settings(parser: argparse.ArgumentParser, what: str, default: str | None = None
                  ) -> None:
    """``--settings JSON`` or ``--settings-file FILE`` (how the rules pass them: one file
    written once per run); without a default, one of them is required."""
    settings = parser.add_mutually_exclusive_group(required=default is None)
    settings.add_argument("--settings", default=default, help=what)
    settings.add_argument("--settings-file", help="the same JSON, in a file")


def cmd_profile(args: argparse.Namespace) -> None:
    from deidpipe.files import write_private_bytes
    from deidpipe.profile import generate_profile

    text = generate_profile(args.profile_dir)
    write_private_bytes(args.output, text.encode("utf-8"))
    print(f"profile {Path(args.profile_dir).name} written to {args.output}", file=sys.stderr)


def cmd_stage(args: argparse.Namespace) -> None:
    from deidpipe.stage import stage_session

    staged_dir = args.staged_dir or paths.staged_dir_beside(args.manifest)
    manifest = stage_session(args.dicom_dir, args.profile, staged_dir, args.manifest,
                             threads=args.threads)
    counts = manifest["counts"]
    print(f"staged {counts['staged']} file(s), skipped {counts['skipped']}, "
          f"{counts['error']} could not be staged; manifest {args.manifest}", file=sys.stderr)


def _labels_or_manifest_place(args: argparse.Namespace) -> dict[str, str]:
    """The labels given as options, else those the manifest's place names (how the rules
    call it: ``{staging}/{group}/{project}/{subject}/{session}.manifest.json``)."""
    given = _labels(args)
    if all(given.values()):
        return given
    if any(given.values()):
        raise PipelineError("give all of --group, --project, --subject and --session, or none "
                            "(they are then read from the manifest's place)")
    try:
        return paths.labels_of_manifest(args.manifest)
    except ValueError as error:
        raise PipelineError(
            f"{error}; give --group, --project, --subject and --session") from None


def _session_of(args: argparse.Namespace) -> str:
    """'session STAGED PLACE: ' for a job's message (the manifest's place without its suffix,
    e.g. staging/demo/deid-demo/sub-002/ses-01), '' if the job names none."""
    manifest = getattr(args, "manifest", None)
    if not manifest:
        return ""
    return f"session {str(manifest).removesuffix('.manifest.json')}: "


def _settings(args: argparse.Namespace) -> dict[str, Any]:
    """``--settings-file`` (JSON written once by the rules) or ``--settings`` (JSON text)."""
    from deidpipe.files import read_json

    if args.settings_file:
        return read_json(args.settings_file)
    return json.loads(args.settings)


def cmd_verify(args: argparse.Namespace) -> None:
    from deidpipe.manifest import read_manifest
    from deidpipe.verify import verify_session

    dicom_dir = args.dicom_dir or read_manifest(args.manifest).source_dir
    if not dicom_dir:
        raise PipelineError(f"the manifest {args.manifest} does not name its source folder "
                            "(written by an older version): give --dicom-dir, or stage the "
                            "session again")
    staged_dir = args.staged_dir or paths.staged_dir_beside(args.manifest)
    report = verify_session(dicom_dir, staged_dir, args.manifest, args.profile,
                            _labels_or_manifest_place(args), args.report,
                            settings=_settings(args), threads=args.threads)
    print(f"verification {report['status']}: {len(report['findings'])} finding(s); "
          f"report {args.report}", file=sys.stderr)
    if report["phi_log"]:
        print(f"WARNING: the PHI log {report['phi_log']} holds patient identifiers "
              "(values before and after de-identification). Keep it private; delete it when "
              "the audit is done.", file=sys.stderr)


# The upload settings (one JSON object, the same for every session), with their defaults;
# None: required.
UPLOAD_SETTINGS: dict[str, Any] = {"fw": None, "command": None, "timeout": None, "ledger": None,
                                   "env": {}, "error_patterns": [], "reupload": False,
                                   "approvals": "", "upload_warned": False}


def _upload_settings(args: argparse.Namespace) -> dict[str, Any]:
    given = _settings(args)
    if not isinstance(given, dict):
        raise PipelineError("the upload settings must be a JSON object")
    unknown = sorted(set(given) - set(UPLOAD_SETTINGS))
    missing = [key for key, default in UPLOAD_SETTINGS.items()
               if default is None and key not in given]
    if unknown or missing:
        raise PipelineError("the upload settings "
                            + "; ".join([*(f"lack '{key}'" for key in missing),
                                         *(f"hold an unknown key '{key}'" for key in unknown)]))
    return {**UPLOAD_SETTINGS, **given}


def cmd_upload(args: argparse.Namespace) -> None:
    from deidpipe.upload import upload_session

    settings = _upload_settings(args)
    labels = _labels_or_manifest_place(args)
    cli_log = args.cli_log
    if not cli_log:
        if not args.results:
            raise PipelineError("give --cli-log (or --results, to write it there)")
        cli_log = paths.cli_log(args.results, paths.session_path(**labels))
    record = upload_session(
        labels=labels, verify_report_path=args.report,
        manifest_path=args.manifest, staged_session_dir=args.staged_dir,
        record_path=args.record, log_path=cli_log, fw=settings["fw"],
        command_template=settings["command"], extra_env=settings["env"],
        timeout=int(settings["timeout"]), ledger_path=settings["ledger"],
        reupload=bool(settings["reupload"]), upload_warned=bool(settings["upload_warned"]),
        approvals_path=settings["approvals"],
        extra_error_patterns=tuple(settings["error_patterns"]))
    if not record["uploaded"]:
        print(f"not uploaded: {record['reason']}", file=sys.stderr)
    else:
        print(record.get("note", f"uploaded {record['files']} file(s)"), file=sys.stderr)


def cmd_approve(args: argparse.Namespace) -> None:
    from deidpipe.approvals import approve

    lines = approve(subject=args.subject, session=args.session, by=args.by,
                    reject=args.reject, group=args.group, project=args.project,
                    config_path=args.config)
    print("\n".join(lines))


def cmd_keyword(args: argparse.Namespace) -> None:
    from deidpipe.profile import lookup_keywords

    matches = lookup_keywords(args.word)
    if not matches:
        raise PipelineError(f"no DICOM keyword or name contains '{args.word}'")
    for tag, vr, keyword, name in matches:
        print(f'"{tag}",{keyword}' if args.csv else f"{tag}  {vr:2}  {keyword:40}  {name}")


def cmd_make_demo(args: argparse.Namespace) -> None:
    from deidpipe.synthetic import build_demo

    build_demo(args.directory)
    print(f"demo sessions written to {args.directory}", file=sys.stderr)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deidpipe", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--results", help="the results folder: profile, stage, verify and "
                                          "upload write their messages to their log there "
                                          "(logs/<command>/...), and to the console as well "
                                          "if they fail")
    commands = parser.add_subparsers(dest="command", required=True)

    profile = commands.add_parser("profile", help="generate a profile YAML from its CSV folder")
    profile.add_argument("profile_dir")
    profile.add_argument("output")
    profile.set_defaults(func=cmd_profile)

    stage = commands.add_parser("stage", help="de-identify one session into the staging folder")
    _add_required(stage, "dicom-dir", "profile", "manifest")
    stage.add_argument("--staged-dir", help="default: beside the manifest, named after it")
    stage.add_argument("--threads", type=int, default=1,
                       help="worker processes sharing the session's files")
    stage.set_defaults(func=cmd_stage)

    verify = commands.add_parser("verify", help="verify one staged session")
    _add_required(verify, "manifest", "profile", "report")
    _add_labels_and_folders(verify, "--dicom-dir", "--staged-dir")
    _add_settings(verify, "JSON: checks (severities), identifier_attributes, phi_log, ocr",
                  default="{}")
    verify.add_argument("--threads", type=int, default=1,
                        help="worker processes sharing the session's files")
    verify.set_defaults(func=cmd_verify)

    upload = commands.add_parser("upload", help="upload one verified session to Flywheel")
    _add_required(upload, "report", "manifest", "record")
    upload.add_argument("--cli-log", help="where the Flywheel CLI's output goes; default: "
                                          "logs/upload/... below --results")
    _add_labels_and_folders(upload, "--staged-dir")
    _add_settings(upload, "JSON: fw, command (the template), timeout, ledger, and optional env "
                          "(mapping of extra variables), error_patterns (extra regular "
                          "expressions for CLI error lines), reupload, approvals (the approvals "
                          "sheet), upload_warned")
    upload.set_defaults(func=cmd_upload)

    approve = commands.add_parser(
        "approve", help="approve (or reject) a warned session after reading its warnings",
        description="Record a person's decision on a session whose verification warned: a line "
                    "in the approvals sheet (setting 'approvals' of config.yaml). An approved "
                    "session is uploaded by the next run with upload on; the approval holds "
                    "for the current verification report only.")
    approve.add_argument("subject", help="the session's subject label")
    approve.add_argument("session", help="the session label")
    approve.add_argument("--by", required=True, help="your name or initials (the reviewer)")
    approve.add_argument("--reject", action="store_true",
                         help="reject the session: it is not uploaded")
    approve.add_argument("--group", help="default: the session's row of sessions.tsv, else "
                                         "the config's group")
    approve.add_argument("--project", help="default: the session's row of sessions.tsv, else "
                                           "the config's project")
    approve.add_argument("--config", default="config.yaml",
                         help="the pipeline's config file (default: config.yaml)")
    approve.set_defaults(func=cmd_approve)

    keyword = commands.add_parser("keyword", help="look up DICOM keywords by a word")
    keyword.add_argument("word")
    keyword.add_argument("--csv", action="store_true",
                         help="print Tag,Keyword rows ready to paste into a profile CSV")
    keyword.set_defaults(func=cmd_keyword)

    demo = commands.add_parser("make-demo", help="write the synthetic demo sessions")
    demo.add_argument("directory")
    demo.set_defaults(func=cmd_make_demo)
    return parser


def _job_log(args: argparse.Namespace) -> Path | None:
    """The job's log below ``--results`` (deidpipe.paths): named by the profile, or by the
    session the manifest's place names; None without ``--results``."""
    if not args.results or args.command not in ("profile", "stage", "verify", "upload"):
        return None
    if args.command == "profile":
        return Path(paths.log(args.results, "profile", Path(args.profile_dir).name))
    try:
        labels = _labels_or_manifest_place(args)
    except PipelineError:
        return None  # the command says what is wrong, on the console
    return Path(paths.log(args.results, args.command, paths.session_path(**labels)))


@contextmanager
def _stderr_to(log_path: Path) -> Iterator[None]:
    """Send this process's messages (and its workers', which inherit them) to the job's log
    instead of the console, for the time of the block."""
    from deidpipe.files import OWNER_ONLY_FILE, make_private_dir

    make_private_dir(log_path.parent)
    sys.stderr.flush()
    console = os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, OWNER_ONLY_FILE)
    os.dup2(log, 2)
    os.close(log)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(console, 2)
        os.close(console)


def main(argv: Sequence[str] | None = None) -> int:
    # Staged copies and reports are still sensitive: nothing we create is readable by others.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    log_path = _job_log(args)
    if log_path is None:
        return _run(args)
    # A job of the rules: its messages go to its log, and to the console as well if it fails.
    with _stderr_to(log_path):
        try:
            code = _run(args)
        except Exception:
            traceback.print_exc()
            code = 1
    if code != 0:
        sys.stderr.write(log_path.read_text(encoding="utf-8", errors="replace"))
    return code


def _run(args: argparse.Namespace) -> int:
    try:
        args.func(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # A full disk, a failed write, a folder that vanished: say which session and file, not
        # a traceback.
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: {_session_of(args)}could not read or write a file{where}: "
              f"{error.strerror or type(error).__name__}. Nothing of this job was kept; "
              "fix the cause and run again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
