"""Load and check config.yaml (with --config overrides) before anything runs."""

import re
import shlex
from pathlib import Path
from typing import Any

from deidpipe.errors import PipelineError, join_problems
from deidpipe.schema import apply_defaults, schema_problems

BOOLEAN_KEYS = ("upload", "reupload", "upload_warned")
TEXT_KEYS = ("group", "project", "sessions", "profile", "staging", "results", "fw",
             "upload_command", "ledger", "phi_log", "approvals")
TRUE_WORDS = {"true": True, "yes": True, "false": False, "no": False}

# The upload commands the pipeline documents, by Flywheel CLI version (each tested against that
# CLI's own argument parser). Both skip files already in Flywheel, so that an upload retried
# after an interruption adds only what is missing, and save the CLI's audit log (one line per
# file or acquisition, failures marked) beside the CLI log.
UPLOAD_COMMANDS = {
    "17": "{fw} import dicom {staged_session_dir} {group} {project} --subject {subject} "
          "--session {session} --skip-existing --audit-log-path {audit_log} -y",
    "18": "{fw} ingest dicom {staged_session_dir} {group} {project} --subject {subject} "
          "--session {session} --skip-existing --save-audit-logs {audit_log} -y",
}
# Options that make the CLI de-identify again: the staged copy is de-identified and verified,
# and a second pass would shift dates or hash UIDs again, or undo what was checked.
SECOND_DEIDENTIFICATION = ("--de-identify", "--deid-profile", "--profile")


def template_problems(template: str) -> list[str]:
    """Why an upload command template cannot be used (empty: it can)."""
    try:
        words = shlex.split(template)
    except ValueError as error:
        return [f"setting 'upload_command' cannot be split into words ({error})"]
    problems = []
    for flag in SECOND_DEIDENTIFICATION:
        if any(word == flag or word.startswith(flag + "=") for word in words):
            problems.append(
                f"setting 'upload_command' holds '{flag}', which makes the Flywheel CLI "
                "de-identify the files again; the staged copy is already de-identified and "
                "verified, and a second pass would change what was checked. Remove it.")
    return problems


def _as_bool(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in TRUE_WORDS:
        return TRUE_WORDS[value.strip().lower()]
    # Anything else is left for the schema to reject with a clear message.
    return value


def _as_text(key: str, value: Any, raw_overrides: dict[str, str]) -> Any:
    # Snakemake turns --config group=007 into the number 7; the raw text is the truth.
    if key in raw_overrides:
        return raw_overrides[key]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return value


def raw_config_overrides(argv: list[str]) -> dict[str, str]:
    """The literal ``key=value`` texts given after ``--config`` on the command line."""
    overrides: dict[str, str] = {}
    collecting = False
    for token in argv:
        if token in ("--config", "-C"):
            collecting = True
            continue
        if token.startswith("--config="):
            token = token.removeprefix("--config=")
            collecting = True
        elif token.startswith("-"):
            collecting = False
            continue
        if collecting and "=" in token:
            key, _, value = token.partition("=")
            overrides[key] = value
    return overrides


def normalise_config(config: dict[str, Any], argv: list[str] | None = None) -> dict[str, Any]:
    """Coerce command-line values, fill defaults and validate; raise PipelineError if invalid."""
    raw_overrides = raw_config_overrides(argv or [])
    checked = dict(config)
    for key in BOOLEAN_KEYS:
        if key in checked:
            checked[key] = _as_bool(checked[key])
    for key in TEXT_KEYS:
        if key in checked:
            checked[key] = _as_text(key, checked[key], raw_overrides)
    if isinstance(checked.get("checks"), dict):
        # YAML reads a bare 'off' as false: take it as the word that was meant.
        checked["checks"] = {name: "off" if severity is False else severity
                             for name, severity in checked["checks"].items()}
    checked = apply_defaults(checked, "config")
    problems = [f"setting '{field}' {problem}" for field, problem in
                schema_problems(checked, "config")]
    if not problems:
        problems = _meaning_problems(checked)
    if problems:
        raise PipelineError(join_problems("config.yaml (or --config) is not valid:", problems))
    return checked


def _meaning_problems(config: dict[str, Any]) -> list[str]:
    """What the schema cannot say: unknown DICOM keywords, a PHI log inside the outputs."""
    problems = []
    if config["identifier_attributes"]:
        # pydicom's dictionary only when there is a keyword to look up: planning imports this
        # module, and pydicom costs a third of a second to import.
        from pydicom.datadict import tag_for_keyword

        problems += [f"setting 'identifier_attributes': '{keyword}' is not a DICOM keyword "
                     "(try: deidpipe keyword WORD)"
                     for keyword in config["identifier_attributes"]
                     if tag_for_keyword(keyword) is None]
    for pattern in config["upload_error_patterns"]:
        try:
            re.compile(pattern)
        except re.error as error:
            problems.append(f"setting 'upload_error_patterns': '{pattern}' is not a valid "
                            f"regular expression ({error})")
    secret_words = ("api-key", "api_key", "apikey", "--key")
    if any(word in config["upload_command"].lower() for word in secret_words) or any(
            word in name.lower() or word in value.lower()
            for name, value in config["upload_env"].items() for word in secret_words):
        problems.append("settings 'upload_command'/'upload_env' must not hold a Flywheel API "
                        "key: it would appear in process lists and logs. Log in once with "
                        "'fw login' instead; the CLI keeps the key in your home folder.")
    problems += template_problems(config["upload_command"])
    if config["phi_log"]:
        phi_log = Path(config["phi_log"]).resolve()
        for key in ("staging", "results"):
            folder = Path(config[key]).resolve()
            if phi_log == folder or folder in phi_log.parents or phi_log in folder.parents:
                problems.append(f"setting 'phi_log' must be a folder outside '{key}' "
                                f"({config[key]}): the PHI log holds identifiers and must "
                                "never be uploaded or shared with the results")
    return problems


def check_profile_exists(config: dict[str, Any], profiles_dir: Path) -> Path:
    """Return the folder of the configured profile, or explain which profiles exist."""
    profile_dir = profiles_dir / config["profile"]
    if not profile_dir.is_dir():
        # profiles/default is Snakemake's own workflow profile, not a de-identification one.
        available = sorted(p.name for p in profiles_dir.iterdir()
                           if p.is_dir() and p.name != "default")
        raise PipelineError(
            f"setting 'profile': there is no folder {profile_dir}. "
            f"Profiles available: {', '.join(available) or 'none'}."
        )
    return profile_dir
