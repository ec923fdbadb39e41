# Config and session sheet: loaded and validated once, before any job is planned.
# Input functions below are dictionary look-ups; nothing here reads DICOM files.
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from deidpipe.approvals import decided_sessions
from deidpipe.config import check_profile_exists, normalise_config
from deidpipe.errors import PipelineError
from deidpipe.profile import profile_sources
from deidpipe.report import write_summary
from deidpipe.run import take_over_stale_lock
from deidpipe.sheet import load_sheet

# Staged copies, reports and logs are sensitive: everything this run creates is owner-only.
os.umask(0o077)


def stop_with(error):
    """Print a user's mistake as a plain message (no traceback) and stop before any job runs."""
    print(f"\nerror: {error}\n", file=sys.stderr)
    sys.exit(1)


try:
    _checked_config = normalise_config(config, sys.argv)
    config.clear()
    config.update(_checked_config)
    PROFILE_DIR = check_profile_exists(config, Path(workflow.basedir) / "profiles")
    # Cluster jobs re-read the sheet; only the main process looks at the DICOM folders.
    SESSIONS = load_sheet(config["sessions"], config["group"], config["project"],
                          check_paths=workflow.is_main_process,
                          staging=config["staging"], results=config["results"])
    if config["upload"] and workflow.is_main_process and shutil.which(config["fw"]) is None:
        raise PipelineError(f"setting 'fw': the Flywheel CLI '{config['fw']}' was not found "
                            "(upload is on). Install it and log in with 'fw login', or set "
                            "'fw' to its path.")
except PipelineError as error:
    stop_with(error)

if workflow.is_main_process:
    # A killed run leaves Snakemake's lock behind; take it over if its owner is gone.
    _stale_lock_message = take_over_stale_lock(".snakemake", record_owner=not workflow.dryrun)
    if _stale_lock_message:
        print(_stale_lock_message, file=sys.stderr)

SESSION_BY_KEY = {session.key: session for session in SESSIONS}
PROFILE = config["profile"]
STAGING = config["staging"]
RESULTS = config["results"]
PROFILE_YAML = f"{RESULTS}/profile/{PROFILE}.yaml"
SESSION_PATH = "{group}/{project}/{subject}/{session}"
# The manifest lists source paths and staged folder names, which can hold names (a PACS export
# folder named after the patient, a SeriesDescription): it stays in staging, beside the session
# folder, not in results.
MANIFEST = f"{STAGING}/{SESSION_PATH}.manifest.json"
VERIFY_SETTINGS = json.dumps({key: config[key]
                              for key in ("checks", "identifier_attributes", "phi_log",
                                          "ocr")},
                             sort_keys=True)

LABEL = r"[A-Za-z0-9._-]+"


wildcard_constraints:
    group=LABEL,
    project=LABEL,
    subject=LABEL,
    session=LABEL,


def dicom_dir_of(wildcards):
    return SESSION_BY_KEY[
        (wildcards.group, wildcards.project, wildcards.subject, wildcards.session)
    ].dicom_dir


def session_outputs(pattern):
    return [pattern.format(**session.__dict__) for session in SESSIONS]


def final_targets():
    if config["upload"]:
        return session_outputs(f"{RESULTS}/upload/{SESSION_PATH}.json")
    return session_outputs(f"{RESULTS}/verify/{SESSION_PATH}.json")


def finish_run(succeeded):
    lines = write_summary(SESSIONS, RESULTS, config["upload"], approvals=config["approvals"],
                          upload_warned=config["upload_warned"])
    if config["phi_log"]:
        lines.append(f"WARNING: the PHI log in {config['phi_log']} holds patient identifiers "
                     "(values before and after de-identification). Keep it private and delete "
                     "it when the audit is done.")
    if not succeeded:
        lines.append("Some jobs failed (see the errors above). Run the same command again "
                     "to retry only what failed.")
    print("\n" + "\n".join(lines), file=sys.stderr)


def literal(text):
    """Text that Snakemake's formatting of a shell command leaves as it is (braces doubled)."""
    return text.replace("{", "{{").replace("}", "}}")


# The shell command of every rule: deidpipe's command line run by the interpreter that has it
# installed; the job's messages go to its log, and to the console if it fails. Fixed values are
# written into the command rather than passed as params: Snakemake formats each param of each
# job while planning, which adds up over 10,000 sessions.
def deidpipe_command(arguments):
    command = literal(shlex.quote(sys.executable)) + " -m deidpipe " + arguments
    return f"({command}) 2> {{log:q}} || {{{{ cat {{log:q}} >&2; exit 1; }}}}"
