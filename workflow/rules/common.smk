# Config and session sheet: loaded and validated once, before any job is planned.
# Input functions below are dictionary look-ups; nothing here reads DICOM files.
import json
import os
import shlex
import shutil
import sys
from pathlib import Path

from deidpipe import paths
from deidpipe.approvals import decided_sessions
from deidpipe.config import check_profile_exists, normalise_config
from deidpipe.errors import PipelineError
from deidpipe.files import make_tree_owner_only, write_private_bytes
from deidpipe.manifest import read_manifest
from deidpipe.parallel import count_files
from deidpipe.profile import profile_sources
from deidpipe.run import take_over_stale_lock
from deidpipe.sheet import load_sheet

SNAKEMAKE_FOLDER = Path(".snakemake")

# Staged copies, reports and logs are sensitive: everything this run creates is owner-only.
os.umask(0o077)
if workflow.is_main_process:
    # Snakemake made its folder and this run's log before reading this file, readable by all,
    # and its log names every job's labels: take that back now (and at the end of the run, for
    # the metadata it writes group-readable on purpose).
    make_tree_owner_only(SNAKEMAKE_FOLDER)


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
    _stale_lock_message = take_over_stale_lock(str(SNAKEMAKE_FOLDER),
                                               record_owner=not workflow.dryrun)
    if _stale_lock_message:
        print(_stale_lock_message, file=sys.stderr)

SESSION_BY_KEY = {session.key: session for session in SESSIONS}
PROFILE = config["profile"]
STAGING = config["staging"]
RESULTS = config["results"]
PROFILE_YAML = paths.profile_yaml(RESULTS, PROFILE)
SESSION_PATH = paths.SESSION_PATH
# The manifest lists source paths and staged folder names, which can hold names (a PACS export
# folder named after the patient, a SeriesDescription): it stays in staging, beside the session
# folder, not in results.
MANIFEST = paths.manifest(STAGING, SESSION_PATH)


# Settings files to write before the first job starts (start_run), by path.
SETTINGS_FILES = {}


def fixed_settings_file(step, settings):
    """The file holding a step's fixed settings (the same for every job), written once per run
    rather than repeated in each of 10,000 jobs' commands. Its name holds the settings'
    digest: other settings are another file, so the jobs' commands change and rerun."""
    text = json.dumps(settings, sort_keys=True)
    path = paths.settings_file(RESULTS, step, text)
    SETTINGS_FILES[path] = text
    return path


def start_run():
    """Before the first job (Snakemake's onstart, which a dry run skips): write the settings
    files. Cluster jobs read what this process wrote."""
    if workflow.is_main_process:
        for path, text in SETTINGS_FILES.items():
            write_private_bytes(path, text.encode("utf-8"))


VERIFY_SETTINGS_FILE = fixed_settings_file(
    "verify", {key: config[key] for key in ("checks", "identifier_attributes", "phi_log", "ocr")})

LABEL = r"[A-Za-z0-9._-]+"
GROUP_ID = r"[0-9a-z.@_-]+"  # Flywheel's characters of a group id (the sheet checks the rest)


wildcard_constraints:
    group=GROUP_ID,
    project=LABEL,
    subject=LABEL,
    session=LABEL,


def dicom_dir_of(wildcards):
    return SESSION_BY_KEY[
        (wildcards.group, wildcards.project, wildcards.subject, wildcards.session)
    ].dicom_dir


# Cores per staging or verification job. A run on this computer gives a session one core, so
# that sessions run side by side and keep every core busy (each job starts serially: imports,
# OCR models), and a large session (setting large_session_files) every core (--cores), so that
# it is not left to one at the end of a batch. Snakemake asks a job for its threads when the
# job is about to run (its input is there then): staging counts the session's source files
# (up to the limit), verification reads the count from the manifest. A dry run runs nothing
# and shows 1 (asking 20,000 jobs would slow planning down). The cluster profiles set the
# threads of both rules themselves (set-threads: 4), as --set-threads does.
CLUSTER_THREADS = 4
LARGE_SESSION_FILES = config["large_session_files"]
# workflow.dryrun is not known yet while the Snakefile is read; the output settings are.
DRY_RUN = workflow.output_settings.dryrun


def threads_for(files):
    if files < LARGE_SESSION_FILES:
        return 1
    return workflow.cores if workflow.local_exec else CLUSTER_THREADS


def stage_threads(wildcards):
    return threads_for(count_files(dicom_dir_of(wildcards), LARGE_SESSION_FILES))


def verify_threads(wildcards, input):
    try:
        files = len(read_manifest(input.manifest).files)
    except (OSError, ValueError, KeyError, TypeError):
        files = 0  # not staged yet: asked again when it is
    return threads_for(files)


def session_outputs(pattern):
    return [pattern.format(**session.__dict__) for session in SESSIONS]


def final_targets():
    if config["upload"]:
        return session_outputs(paths.upload_record(RESULTS, SESSION_PATH))
    return session_outputs(paths.verify_report(RESULTS, SESSION_PATH))


def finish_run(succeeded):
    # Imported here, at the end of a run: the report needs pandas and the verification code
    # (pydicom), which planning has no use for.
    from deidpipe.report import write_summary

    make_tree_owner_only(SNAKEMAKE_FOLDER)
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


def quoted(text):
    """A fixed value for a shell command, quoted for the shell and left alone by Snakemake."""
    return literal(shlex.quote(str(text)))


# The shell command of every rule: deidpipe's command line run by the interpreter that has it
# installed. Snakemake formats every placeholder of every job's command several times while
# planning, which adds up over 10,000 sessions: fixed values are written into the command as
# text (quoted()), and what the command can derive from the manifest's place (the labels, the
# staged folder) or from the results folder (its log, deidpipe.paths) is not passed. The job
# writes its messages to its log itself (not a log: of the rule, which cost a tenth of the
# planning time), and to the console as well if it fails.
def deidpipe_command(arguments):
    return f"{quoted(sys.executable)} -m deidpipe --results {quoted(RESULTS)} {arguments}"
