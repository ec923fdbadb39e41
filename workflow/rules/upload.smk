# Uploads run on the submit host (cluster nodes often cannot reach Flywheel), one at a time
# unless config 'upload_jobs' allows more.
workflow.register_resource("flywheel_uploads", config["upload_jobs"])

# Decisions on warned sessions (deidpipe approve): the sheet is read once while planning, so a
# malformed line stops the run here. A session with a line in it has the sheet as an input:
# a new decision (the sheet's content changes) reruns its upload, and a held record does not
# stand in the way of an approved upload. Sessions without a line are not rerun by it.
APPROVALS = config["approvals"]
try:
    DECIDED_SESSIONS = decided_sessions(APPROVALS) if workflow.is_main_process else set()
except PipelineError as error:
    stop_with(error)


def approvals_of(wildcards):
    key = (wildcards.group, wildcards.project, wildcards.subject, wildcards.session)
    return [APPROVALS] if key in DECIDED_SESSIONS else []


# The fixed settings, the same for every session: one file written once per run.
UPLOAD_SETTINGS_FILE = fixed_settings_file("upload", {
    "fw": config["fw"], "command": config["upload_command"], "env": config["upload_env"],
    "error_patterns": config["upload_error_patterns"], "timeout": config["upload_timeout"],
    "ledger": config["ledger"], "reupload": config["reupload"], "approvals": APPROVALS,
    "upload_warned": config["upload_warned"]})


rule upload:
    """Send one verified session's staged copy to Flywheel with the configured CLI command."""
    input:
        report=paths.verify_report(RESULTS, SESSION_PATH),
        manifest=MANIFEST,
        approvals=approvals_of,
    output:
        record=paths.upload_record(RESULTS, SESSION_PATH),
    resources:
        flywheel_uploads=1,
    localrule: True
    # The staged folder and the labels are read from the manifest's place; the Flywheel CLI's
    # output goes to paths.cli_log below results.
    shell:
        deidpipe_command(
            "upload --report {input.report:q} --manifest {input.manifest:q}"
            " --record {output.record:q} --settings-file " + quoted(UPLOAD_SETTINGS_FILE)
        )
