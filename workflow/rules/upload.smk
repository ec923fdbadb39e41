# Uploads run on the submit host (cluster nodes often cannot reach Flywheel), one at a time
# unless config 'upload_jobs' allows more.
workflow.register_resource("flywheel_uploads", config["upload_jobs"])


rule upload:
    """Send one verified session's staged copy to Flywheel with the configured CLI command."""
    input:
        report=f"{RESULTS}/verify/{SESSION_PATH}.json",
        manifest=MANIFEST,
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
        hold_warned="" if config["upload_warned"] else "--hold-warned",
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
            " --ledger {params.ledger:q} {params.reupload} {params.hold_warned}"
            " --group {wildcards.group:q} --project {wildcards.project:q}"
            " --subject {wildcards.subject:q} --session {wildcards.session:q}"
        )
