rule verify:
    """Check one staged session against its source and the profile; write its report."""
    # The profile is not an input of its own: it reaches verification through the manifest
    # (a changed profile restages the session, which verifies it again), and a second input
    # for each of 10,000 jobs cost about a twentieth of the planning time.
    input:
        manifest=MANIFEST,
    output:
        report=report(
            paths.verify_report(RESULTS, SESSION_PATH),
            caption="../report/verify.rst",
            category="Verification",
            subcategory="{group}/{project}",
            labels={"subject": "{subject}", "session": "{session}"},
        ),
    threads: 1 if DRY_RUN else verify_threads
    # The source folder, the staged folder and the labels are read from the manifest (its
    # content and its place).
    shell:
        deidpipe_command(
            "verify --manifest {input.manifest:q} --profile " + quoted(PROFILE_YAML)
            + " --report {output.report:q} --threads {threads} --settings-file "
            + quoted(VERIFY_SETTINGS_FILE)
        )
