rule profile:
    """Generate the Flywheel profile YAML from the profile's CSV sources."""
    input:
        profile_sources(PROFILE_DIR),
    output:
        PROFILE_YAML,
    params:
        profile_dir=PROFILE_DIR,
    localrule: True
    shell:
        deidpipe_command("profile {params.profile_dir:q} {output:q}")
