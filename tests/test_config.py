import fnmatch
import tomllib
from importlib.resources import files

import pytest

from conftest import REPO
from deidpipe.config import check_profile_exists, normalise_config, raw_config_overrides
from deidpipe.errors import PipelineError
from deidpipe.schema import GROUP_ID_PATTERN, load_schema

BASE = {"group": "lab", "project": "study", "sessions": "sessions.tsv",
        "profile": "PennBrainScienceCenter", "staging": "staging", "results": "results"}


def test_defaults_are_filled():
    config = normalise_config(dict(BASE))
    assert config["upload"] is False
    assert config["fw"] == "fw"
    assert "{staged_session_dir}" in config["upload_command"]
    assert config["upload_jobs"] == 1


@pytest.mark.parametrize("text, expected", [("true", True), ("True", True), ("yes", True),
                                            ("false", False), ("no", False), ("NO", False)])
def test_booleans_from_the_command_line(text, expected):
    assert normalise_config({**BASE, "upload": text})["upload"] is expected


@pytest.mark.parametrize("value", ["maybe", 1, "1", None])
def test_other_booleans_are_rejected(value):
    with pytest.raises(PipelineError, match="'upload' must be true or false"):
        normalise_config({**BASE, "upload": value})


def test_group_given_as_number_keeps_its_text():
    # snakemake --config group=007 hands over the int 7; the command line says 007.
    argv = ["snakemake", "--cores", "1", "--config", "group=007", "upload=true"]
    assert normalise_config({**BASE, "group": 7}, argv)["group"] == "007"
    assert normalise_config({**BASE, "group": 42})["group"] == "42"


def test_raw_overrides_stop_at_the_next_option():
    argv = ["snakemake", "--config", "a=1", "b=x=y", "--cores", "2", "c=3"]
    assert raw_config_overrides(argv) == {"a": "1", "b": "x=y"}


def test_unknown_key_and_bad_label_are_named():
    with pytest.raises(PipelineError) as error:
        normalise_config({**BASE, "uplaod": True, "project": "my study"})
    message = str(error.value)
    assert "'uplaod' is not a setting" in message
    assert "'project' may contain only" in message


def test_missing_required_key():
    config = dict(BASE)
    del config["group"]
    with pytest.raises(PipelineError, match="'group' is missing"):
        normalise_config(config)


def test_profile_named_default_is_rejected():
    # Snakemake would load profiles/default/ as its own workflow profile.
    with pytest.raises(PipelineError, match="'profile'"):
        normalise_config({**BASE, "profile": "default"})


def test_missing_profile_lists_the_available_ones(tmp_path):
    (tmp_path / "SiteA").mkdir()
    with pytest.raises(PipelineError, match="Profiles available: SiteA"):
        check_profile_exists({**BASE, "profile": "SiteB"}, tmp_path)


def test_check_severities_are_validated_and_bare_off_is_understood():
    config = normalise_config({**BASE, "checks": {"name_part": False, "private_tags": "keep"}})
    assert config["checks"] == {"name_part": "off", "private_tags": "keep"}
    with pytest.raises(PipelineError, match="checks.name_part' must be one of: fail, warn, off"):
        normalise_config({**BASE, "checks": {"name_part": "maybe"}})
    with pytest.raises(PipelineError, match="'checks.leak'"):
        normalise_config({**BASE, "checks": {"leak": "fail"}})
    with pytest.raises(PipelineError, match="checks.inventory"):
        normalise_config({**BASE, "checks": {"inventory": "warn"}})


def test_identifier_attributes_must_be_dicom_keywords():
    assert normalise_config({**BASE, "identifier_attributes": ["StudyID"]})[
        "identifier_attributes"] == ["StudyID"]
    with pytest.raises(PipelineError, match="'PatientMRN' is not a DICOM keyword"):
        normalise_config({**BASE, "identifier_attributes": ["PatientMRN"]})


@pytest.mark.parametrize("phi_log", ["results/phi", "staging", "."])
def test_phi_log_must_be_outside_staging_and_results(phi_log):
    with pytest.raises(PipelineError, match="setting 'phi_log' must be a folder outside"):
        normalise_config({**BASE, "phi_log": phi_log})
    assert normalise_config({**BASE, "phi_log": "phi-log"})["phi_log"] == "phi-log"


@pytest.mark.parametrize("override", [
    {"upload_command": "{fw} import dicom {staged_session_dir} {group} {project} "
                       "--subject {subject} --session {session} --api-key abc -y"},
    {"upload_env": {"FW_CLI_API_KEY": "site.flywheel.io:abc"}},
])
def test_an_api_key_in_the_config_is_refused(override):
    with pytest.raises(PipelineError, match="must not hold a Flywheel API key"):
        normalise_config({**BASE, **override})


def test_upload_error_patterns_must_compile():
    with pytest.raises(PipelineError, match="'upload_error_patterns': '\\(' is not a valid"):
        normalise_config({**BASE, "upload_error_patterns": ["("]})


def test_schemas_are_package_data():
    # An installed (not editable) package has no workflow/ folder beside it: the schemas are
    # read from the package itself, and pyproject.toml must ship them.
    shipped = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"][
        "package-data"]["deidpipe"]
    schemas = sorted(entry.name for entry in (files("deidpipe") / "schemas").iterdir()
                     if entry.name.endswith(".yaml"))
    assert schemas == ["config.schema.yaml", "sessions.schema.yaml"]
    assert all(any(fnmatch.fnmatch(f"schemas/{name}", pattern) for pattern in shipped)
               for name in schemas)
    assert not (REPO / "workflow" / "schemas").exists()


@pytest.mark.parametrize("group,valid", [("Neuro", False), ("g", False), ("lab ", False),
                                         ("neuro-lab", True), ("my.lab@penn", True)])
def test_the_config_group_follows_flywheels_rule(group, valid):
    if valid:
        assert normalise_config({**BASE, "group": group})["group"] == group
    else:
        with pytest.raises(PipelineError, match="setting 'group' is not a Flywheel group id"):
            normalise_config({**BASE, "group": group})


def test_both_schemas_hold_flywheels_group_rule():
    assert (load_schema("config")["properties"]["group"]["pattern"] == GROUP_ID_PATTERN
            == load_schema("sessions")["properties"]["group"]["pattern"])
