"""The upload commands against the real Flywheel CLIs (flywheel-cli 17.8.2 and 18.5.1 from
PyPI, in cached environments of their own: tests/real_fw): their own argument parsers accept
every command the pipeline documents, the fake ``fw`` the other tests use accepts exactly what
they accept, and an upload without a login fails plainly and is retried."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from conftest import FAKE_FW, REPO, run_snakemake
from deidpipe.config import UPLOAD_COMMANDS
from deidpipe.errors import PipelineError
from deidpipe.sheet import label_is_valid
from deidpipe.upload import build_command, upload_session
from real_fw import VERSIONS, installed, parse_with_real_cli

# A session as a site names it (the real CLI refuses a group id such as 'g').
LABELS = {"group": "demo", "project": "deid-demo", "subject": "sub-001", "session": "ses-01"}
# (command, FLYWHEEL_CLI_LEGACY set): `fw import` exists only with it, in both versions.
SHIPPED = [(UPLOAD_COMMANDS["17"], True), (UPLOAD_COMMANDS["18"], False)]


def real_cli(series: str):
    cli = installed(series)
    if cli.venv is None:
        pytest.skip(cli.problem)
    return cli


def rendered(template: str, staged: str = "/data/staging/demo/deid-demo/sub-001/ses 01",
             audit_log: str = "/data/results/logs/upload/sub-001.fw.audit-1.csv") -> list[str]:
    """The command as the pipeline builds it for a session, without the 'fw' itself."""
    return build_command(template, {"fw": "fw", "staged_session_dir": staged,
                                    "audit_log": audit_log, **LABELS})[1:]


def fake_accepts(argv: list[str], legacy: bool) -> bool:
    env = {key: value for key, value in os.environ.items() if key != "FLYWHEEL_CLI_LEGACY"}
    env["FAKE_FW_PARSE_ONLY"] = "1"
    if legacy:
        env["FLYWHEEL_CLI_LEGACY"] = "true"
    result = subprocess.run([FAKE_FW, *argv], capture_output=True, text=True, env=env,
                            check=False, timeout=60)
    assert result.returncode in (0, 2), result.stderr
    return result.returncode == 0


def test_shipped_config_and_readme_document_the_tested_commands():
    config = (REPO / "config.yaml").read_text()
    readme = (REPO / "README.md").read_text()
    for series, template in UPLOAD_COMMANDS.items():
        assert template in config, f"config.yaml does not show the {series}.x command"
        assert template in readme, f"README.md does not show the {series}.x command"
    for version in VERSIONS.values():
        assert f"flywheel-cli {version}" in readme


def variants(template: str) -> list[list[str]]:
    """The shipped command and commands a person might make of it, right and wrong."""
    argv = rendered(template)
    command = argv[0]
    other_log = "--audit-log-path" if command == "ingest" else "--save-audit-logs"
    own_log = "--save-audit-logs" if command == "ingest" else "--audit-log-path"
    return [
        argv,
        [word for word in argv if word != "--skip-existing"],
        [word for word in argv if word != "-y"],
        argv[:argv.index("--subject")] + argv[argv.index("--session"):],  # no --subject
        [("--skip-exisiting" if word == "--skip-existing" else word) for word in argv],
        [(other_log if word == own_log else word) for word in argv],  # the other CLI's option
        [*argv, "--no-such-option"],
        argv[:4] + argv[5:],  # no project label
        argv[:3] + argv[5:],  # no group id or project label
    ]


def assert_parsed_as_the_pipeline_means(values: dict) -> None:
    folder = values.get("folder") or values.get("src_fs")
    assert folder == "/data/staging/demo/deid-demo/sub-001/ses 01"
    assert (values["group"], values["project"]) == ("demo", "deid-demo")
    assert (values["subject"], values["session"]) == ("sub-001", "ses-01")
    assert values["skip_existing"] is True
    audit = values.get("audit_log_path") or values.get("save_audit_logs")
    assert audit == "/data/results/logs/upload/sub-001.fw.audit-1.csv"
    assert values.get("yes") or values.get("assume_yes")
    assert not values.get("de_identify") and not values.get("profile")


@pytest.mark.parametrize("series", sorted(VERSIONS))
def test_real_cli_accepts_every_shipped_command_and_the_fake_agrees_with_it(series, tmp_path):
    cli = real_cli(series)
    # Every variant of both commands with FLYWHEEL_CLI_LEGACY set; without it, those of
    # `ingest` and the shipped `import` (which must then be refused).
    import_template, ingest_template = UPLOAD_COMMANDS["17"], UPLOAD_COMMANDS["18"]
    asked = {True: variants(import_template) + variants(ingest_template),
             False: variants(ingest_template) + [rendered(import_template)]}
    checked = 0
    for legacy, argv_list in asked.items():
        real = parse_with_real_cli(cli, argv_list, legacy, tmp_path)
        for argv, result in zip(argv_list, real, strict=True):
            assert fake_accepts(argv, legacy) == result["accepted"], (
                f"fake and flywheel-cli {cli.version} disagree on {argv} (legacy={legacy}): "
                f"real says {result}")
            checked += 1
        for template, needs_legacy in SHIPPED:
            argv = rendered(template)
            [result] = [result for asked_argv, result in zip(argv_list, real, strict=True)
                        if asked_argv == argv] or [None]
            if result is None:
                continue
            if needs_legacy and not legacy:
                assert not result["accepted"]  # `fw import` exists only with the setting
                continue
            assert result["accepted"], f"flywheel-cli {cli.version} refuses {argv}: {result}"
            assert_parsed_as_the_pipeline_means(result["values"])
    assert checked == 28  # accepted and refused commands, both settings


@pytest.fixture
def verified_demo_session(tmp_path, profile_v1):
    from deidpipe.stage import stage_session
    from deidpipe.synthetic import SeriesSpec, SessionSpec, build_session
    from deidpipe.verify import verify_session

    source = tmp_path / "source"
    build_session(SessionSpec("s", [SeriesSpec("MR_small.dcm", "T1w", 2)]), source)
    stage_session(source, profile_v1, tmp_path / "staged", tmp_path / "manifest.json")
    report = verify_session(source, tmp_path / "staged", tmp_path / "manifest.json", profile_v1,
                            LABELS, tmp_path / "report.json")
    assert report["status"] == "pass"
    return tmp_path


@pytest.mark.parametrize("series", sorted(VERSIONS))
@pytest.mark.parametrize("template,legacy", SHIPPED, ids=["import", "ingest"])
def test_real_cli_without_a_login_fails_plainly_leaves_nothing_and_is_retried(
        series, template, legacy, verified_demo_session, monkeypatch):
    cli = real_cli(series)
    folder = verified_demo_session
    home = folder / "home"  # no Flywheel login in it
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    log = folder / "logs" / "sub-001.fw.log"

    def attempt() -> str:
        with pytest.raises(PipelineError) as failure:
            upload_session(labels=LABELS, verify_report_path=folder / "report.json",
                           manifest_path=folder / "manifest.json",
                           staged_session_dir=folder / "staged", record_path=folder / "rec.json",
                           log_path=log, fw=str(cli.fw), command_template=template,
                           extra_env={"FLYWHEEL_CLI_LEGACY": "true"} if legacy else {},
                           timeout=300, ledger_path=folder / "ledger.jsonl",
                           approvals_path=folder / "approvals.tsv")
        return str(failure.value)

    message = attempt()
    assert "the Flywheel CLI is not logged in on this computer: run `fw login`" in message
    assert "retried by the next run" in message and str(log) in message
    for noise in ("Traceback", "sqlite", "Error:", "please login"):
        assert noise not in message
    assert not (folder / "rec.json").exists() and not (folder / "ledger.jsonl").exists()
    printed = log.read_text()
    assert "Not logged in, please login using `fw login` and your API key" in printed
    # (The workflow test below retries through Snakemake; here once is enough for one pair.)
    if (series, legacy) == ("18", False):
        # The same plain failure again; whether the CLI ended by itself after saying so, or
        # was stopped by the grace period, depends on how busy the machine is.
        assert without_grace_period(attempt()) == without_grace_period(message)
        assert log.read_text().count("] running: ") == 2  # retried: the CLI ran again
        assert not (folder / "rec.json").exists() and not (folder / "ledger.jsonl").exists()


def without_grace_period(message: str) -> str:
    return re.sub(r"; it was stopped \d+ s after saying so \(it had not ended by itself\)",
                  "", message)


def test_workflow_with_the_real_cli_and_no_login_keeps_the_traceback_in_the_log(project,
                                                                                 tmp_path):
    cli = real_cli("18")
    home = tmp_path / "home"
    home.mkdir()
    env = {"HOME": str(home)}
    config = ["--config", "upload=true", f"fw={cli.fw}"]
    first = run_snakemake(project, *config, env=env)
    console = first.stdout + first.stderr
    assert first.returncode != 0
    assert "the Flywheel CLI is not logged in on this computer: run `fw login`" in console
    for noise in ("Traceback", "sqlite3", "OperationalError", "please login"):
        assert noise not in console, f"the CLI's {noise!r} reached the console"
    cli_log = project / "results/logs/upload/demo/deid-demo/sub-001/ses-01.fw.log"
    assert "Not logged in, please login" in cli_log.read_text()
    records = project / "results/upload/demo/deid-demo"
    assert not (records / "sub-001/ses-01.json").exists()
    assert not (project / "upload-ledger.jsonl").exists()
    second = run_snakemake(project, *config, env=env)  # retried, and fails the same way
    assert second.returncode != 0
    assert cli_log.read_text().count("] running: ") == 2
    assert FAKE_FW.exists()  # the other tests' stand-in is untouched by this one
    assert json.loads((records / "sub-002/ses-01.json").read_text())["held"] == "waiting"


GROUP_IDS = ["Neuro", "g", "-lab", "lab-", "neuro lab", "a" * 33, "lab!", "lab", "neuro-lab",
             "a1", "my.lab@penn", "lab_2", "00", "a" * 32, "x.y"]


@pytest.mark.parametrize("series", sorted(VERSIONS))
def test_the_sheets_group_rule_is_the_clis(series):
    """The group ids the sheet and config accept are exactly those the CLI's own check takes
    (flywheel_cli.util.group_id, which `fw import` applies to its group argument)."""
    cli = real_cli(series)
    probe = ("import json, sys\nfrom flywheel_cli.util import group_id\nout = {}\n"
             "for value in json.load(sys.stdin):\n"
             "    try:\n        group_id(value)\n        out[value] = True\n"
             "    except TypeError:\n        out[value] = False\n"
             "print(json.dumps(out))\n")
    result = subprocess.run([cli.python, "-c", probe], input=json.dumps(GROUP_IDS),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    taken = json.loads(result.stdout)
    assert {value: label_is_valid("group", value) for value in GROUP_IDS} == taken
    assert sorted(taken.values()) == [False] * 7 + [True] * 8  # both kinds are tried


def test_cli_environments_are_kept_for_the_next_run():
    for series, version in VERSIONS.items():
        cli = installed(series)
        if cli.venv is None:
            pytest.skip(cli.problem)
        assert json.loads((cli.venv / "installed.json").read_text()) == {
            "flywheel-cli": version}
        assert Path(cli.fw).is_file()
