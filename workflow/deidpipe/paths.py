"""Where each session's files are: the one definition of the per-session path contract.

A session's place is ``{group}/{project}/{subject}/{session}`` (labels never hold a '/'), below
the staging and the results folders. In staging, all of them sensitive: the staged copy, its
manifest beside it (``{session}.manifest.json``) and its review page beside it
(``{session}.review.html``). In results: the verification report, the upload record and the
logs. The staged folder and the review page are derived from the manifest, never built anew.

The functions that return text are used two ways: the rules pass ``SESSION_PATH`` (its braces
are Snakemake wildcards) to get patterns, the command line and the report pass one session's
``session_path`` to get that session's files.
"""

import hashlib
from pathlib import Path

SESSION_PATH = "{group}/{project}/{subject}/{session}"
LABEL_KEYS = ("group", "project", "subject", "session")
MANIFEST_SUFFIX = ".manifest.json"
REVIEW_SUFFIX = ".review.html"


def session_path(group: str, project: str, subject: str, session: str) -> str:
    """``group/project/subject/session``: a session's place below staging and results."""
    return f"{group}/{project}/{subject}/{session}"


# ---- staging --------------------------------------------------------------------------------

def manifest(staging: str | Path, session: str) -> str:
    """The staging manifest; it stands for the staged folder beside it (Snakemake's output)."""
    return f"{staging}/{session}{MANIFEST_SUFFIX}"


def staged_dir_beside(manifest_path: str | Path) -> Path:
    """The staged folder a manifest stands for: the manifest lies beside it, named after it
    (``.../sub-01/ses-01.manifest.json`` for ``.../sub-01/ses-01``)."""
    manifest_path = Path(manifest_path)
    if not manifest_path.name.endswith(MANIFEST_SUFFIX):
        raise ValueError(f"a manifest's name ends with {MANIFEST_SUFFIX}: {manifest_path}")
    return manifest_path.with_name(manifest_path.name.removesuffix(MANIFEST_SUFFIX))


def review_page_beside(staged_session_dir: str | Path) -> Path:
    """The review page of the session staged in ``staged_session_dir``: its sibling
    ``<session>.review.html`` (never inside it: that folder holds only staged files)."""
    staged = Path(staged_session_dir)
    return staged.with_name(staged.name + REVIEW_SUFFIX)


def labels_of_manifest(manifest_path: str | Path) -> dict[str, str]:
    """The group, project, subject and session labels a manifest's place names (the last four
    parts of ``{staging}/{group}/{project}/{subject}/{session}.manifest.json``)."""
    staged = staged_dir_beside(manifest_path)
    parts = staged.parts[-4:]
    if len(parts) < 4:
        raise ValueError("a manifest lies at {staging}/" + SESSION_PATH + MANIFEST_SUFFIX
                         + f": {manifest_path}")
    return dict(zip(LABEL_KEYS, parts, strict=True))


# ---- results --------------------------------------------------------------------------------

def profile_yaml(results: str | Path, profile: str) -> str:
    """The Flywheel profile generated from ``profiles/<profile>/``."""
    return f"{results}/profile/{profile}.yaml"


def verify_report(results: str | Path, session: str) -> str:
    return f"{results}/verify/{session}.json"


def upload_record(results: str | Path, session: str) -> str:
    return f"{results}/upload/{session}.json"


def log(results: str | Path, step: str, session: str) -> str:
    """The log of one job: ``step`` is the rule (profile, stage, verify, upload)."""
    return f"{results}/logs/{step}/{session}.log"


def cli_log(results: str | Path, session: str) -> str:
    """What the Flywheel CLI printed while uploading the session."""
    return f"{results}/logs/upload/{session}.fw.log"


def settings_file(results: str | Path, step: str, text: str) -> str:
    """Where a step's fixed settings (JSON ``text``) are written for its jobs. The name holds
    the text's digest, so that other settings are another file and their jobs' commands change
    (Snakemake reruns a job whose command changed)."""
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]
    return f"{results}/settings/{step}-{digest}.json"
