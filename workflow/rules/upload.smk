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


rule upload:
    """Send one verified session's staged copy to Flywheel with the configured CLI command."""
    input:
        report=f"{RESULTS}/verify/{SESSION_PATH}.json",
        manifest=MANIFEST,
        approvals=approvals_of,
    output:
        record=f"{RESULTS}/upload/{SESSION_PATH}.json",
    log:
        f"{RESULTS}/logs/upload/{SESSION_PATH}.log",
    params:
        staged=f"{STAGING}/{SESSION_PATH}",
        fw=config["fw"],
        # Functions, so that Snakemake leaves the template's {placeholders} alone.
        command=lambda wildcards: config["upload_command"],
        env=lambda wildcards: json.dumps(config["upload_env"]),
        error_patterns=lambda wildcards: json.dumps(config["upload_error_patterns"]),
        timeout=config["upload_timeout"],
        ledger=config["ledger"],
        reupload="--reupload" if config["reupload"] else "",
        approvals=APPROVALS,
        upload_warned="--upload-warned" if config["upload_warned"] else "",
        cli_log=f"{RESULTS}/logs/upload/{SESSION_PATH}.fw.log",
    resources:
        flywheel_uploads=1,
    localrule: True
    shell:
        deidpipe_command(
            "upload --report {input.report:q}"
            " --manifest {input.manifest:q} --staged-dir {params.staged:q}"
            " --record {output.record:q} --cli-log {params.cli_log:q} --fw {params.fw:q}"
            " --command {params.command:q} --env {params.env:q} --timeout {params.timeout}"
            " --error-patterns {params.error_patterns:q}"
            " --ledger {params.ledger:q} {params.reupload}"
            " --approvals {params.approvals:q} {params.upload_warned}"
            " --group {wildcards.group:q} --project {wildcards.project:q}"
            " --subject {wildcards.subject:q} --session {wildcards.session:q}"
        )
