rule verify:
    """Check one staged session against its source and the profile; write its report."""
    input:
        manifest=MANIFEST,
        profile=PROFILE_YAML,
    output:
        report=report(
            f"{RESULTS}/verify/{SESSION_PATH}.json",
            caption="../report/verify.rst",
            category="Verification",
            subcategory="{group}/{project}",
            labels={"subject": "{subject}", "session": "{session}"},
        ),
    log:
        f"{RESULTS}/logs/verify/{SESSION_PATH}.log",
    threads: 4
    resources:
        mem_mb=1000,
        runtime=60,
    # The source folder and the staged folder are read from the manifest.
    shell:
        deidpipe_command(
            "verify --manifest {input.manifest:q} --profile {input.profile:q}"
            " --report {output.report:q} --group {wildcards.group:q}"
            " --project {wildcards.project:q} --subject {wildcards.subject:q}"
            " --session {wildcards.session:q} --threads {threads} --settings "
            + literal(shlex.quote(VERIFY_SETTINGS))
        )
