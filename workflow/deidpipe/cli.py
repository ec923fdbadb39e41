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
from collections.abc import Sequence
from pathlib import Path

from deidpipe.errors import PipelineError


def _labels(args: argparse.Namespace) -> dict[str, str]:
    return {"group": args.group, "project": args.project, "subject": args.subject,
            "session": args.session}


def _add_required(parser: argparse.ArgumentParser, *names: str) -> None:
    """Add required ``--name VALUE`` options (paths and labels the rules always pass)."""
    for name in names:
        parser.add_argument(f"--{name}", required=True)


LABEL_OPTIONS = ("group", "project", "subject", "session")


def cmd_profile(args: argparse.Namespace) -> None:
    from deidpipe.files import write_private_bytes
    from deidpipe.profile import generate_profile

    text = generate_profile(args.profile_dir)
    write_private_bytes(args.output, text.encode("utf-8"))
    print(f"profile {Path(args.profile_dir).name} written to {args.output}", file=sys.stderr)


def cmd_stage(args: argparse.Namespace) -> None:
    from deidpipe.stage import stage_session, staged_dir_beside

    staged_dir = args.staged_dir or staged_dir_beside(args.manifest)
    manifest = stage_session(args.dicom_dir, args.profile, staged_dir, args.manifest,
                             threads=args.threads)
    counts = manifest["counts"]
    print(f"staged {counts['staged']} file(s), skipped {counts['skipped']}, "
          f"{counts['error']} could not be staged; manifest {args.manifest}", file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> None:
    from deidpipe.files import read_json
    from deidpipe.stage import staged_dir_beside
    from deidpipe.verify import verify_session

    dicom_dir = args.dicom_dir or read_json(args.manifest).get("source_dir")
    if not dicom_dir:
        raise PipelineError(f"the manifest {args.manifest} does not name its source folder "
                            "(written by an older version): give --dicom-dir, or stage the "
                            "session again")
    staged_dir = args.staged_dir or staged_dir_beside(args.manifest)
    report = verify_session(dicom_dir, staged_dir, args.manifest, args.profile,
                            _labels(args), args.report, settings=json.loads(args.settings),
                            threads=args.threads)
    print(f"verification {report['status']}: {len(report['findings'])} finding(s); "
          f"report {args.report}", file=sys.stderr)
    if report["phi_log"]:
        print(f"WARNING: the PHI log {report['phi_log']} holds patient identifiers "
              "(values before and after de-identification). Keep it private; delete it when "
              "the audit is done.", file=sys.stderr)


def cmd_upload(args: argparse.Namespace) -> None:
    from deidpipe.upload import upload_session

    record = upload_session(
        labels=_labels(args), verify_report_path=args.report, manifest_path=args.manifest,
        staged_session_dir=args.staged_dir, record_path=args.record, log_path=args.cli_log,
        fw=args.fw, command_template=args.command, extra_env=json.loads(args.env),
        timeout=args.timeout, ledger_path=args.ledger, reupload=args.reupload,
        upload_warned=args.upload_warned, approvals_path=args.approvals,
        extra_error_patterns=tuple(json.loads(args.error_patterns)))
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
    _add_required(verify, "manifest", "profile", "report", *LABEL_OPTIONS)
    verify.add_argument("--dicom-dir", help="default: the source folder the manifest names")
    verify.add_argument("--staged-dir", help="default: beside the manifest, named after it")
    verify.add_argument("--settings", default="{}",
                        help="JSON: checks (severities), identifier_attributes, phi_log")
    verify.add_argument("--threads", type=int, default=1,
                        help="worker processes sharing the session's files")
    verify.set_defaults(func=cmd_verify)

    upload = commands.add_parser("upload", help="upload one verified session to Flywheel")
    _add_required(upload, "report", "manifest", "staged-dir", "record", "cli-log", "fw",
                  "command", "ledger", *LABEL_OPTIONS)
    upload.add_argument("--env", default="{}", help="JSON mapping of extra variables")
    upload.add_argument("--timeout", type=int, required=True)
    upload.add_argument("--reupload", action="store_true")
    upload.add_argument("--error-patterns", default="[]",
                        help="JSON list of extra regular expressions for CLI error lines")
    upload.add_argument("--approvals", default="",
                        help="the approvals sheet (decisions on warned sessions)")
    upload.add_argument("--upload-warned", action="store_true",
                        help="upload warned sessions without waiting for an approval")
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


def main(argv: Sequence[str] | None = None) -> int:
    # Staged copies and reports are still sensitive: nothing we create is readable by others.
    os.umask(0o077)
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except PipelineError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except OSError as error:
        # A full disk, a failed write, a folder that vanished: say which file, not a traceback.
        where = f" ({error.filename})" if error.filename else ""
        print(f"error: could not read or write a file{where}: "
              f"{error.strerror or type(error).__name__}. Nothing of this job was kept; "
              "fix the cause and run again.", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
