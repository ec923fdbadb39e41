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
    params:
        dicom_dir=dicom_dir_of,
        staged=f"{STAGING}/{SESSION_PATH}",
        python=PYTHON,
        # A function, so that Snakemake leaves the JSON's braces alone.
        settings=lambda wildcards: VERIFY_SETTINGS,
    threads: 4
    resources:
        mem_mb=1000,
        runtime=60,
    shell:
        run_logged(
            '"{params.python}" -m deidpipe verify --dicom-dir {params.dicom_dir:q}'
            " --staged-dir {params.staged:q} --manifest {input.manifest:q}"
            " --profile {input.profile:q} --report {output.report:q}"
            " --group {wildcards.group:q} --project {wildcards.project:q}"
            " --subject {wildcards.subject:q} --session {wildcards.session:q}"
            " --settings {params.settings:q} --threads {threads}"
        )
