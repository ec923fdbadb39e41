# The staged folder is not a Snakemake output: directory() outputs get a .snakemake_timestamp
# file, which would be staged and uploaded. The manifest (beside the folder) stands for it; staging renames
# the folder into place atomically before the manifest is written, and verification and upload
# check the folder against the manifest file by file.


rule stage:
    """De-identify one session with Flywheel's engine into its staged folder (the dry run)."""
    input:
        profile=PROFILE_YAML,
    output:
        manifest=MANIFEST,
    params:
        dicom_dir=dicom_dir_of,
    threads: 1 if DRY_RUN else stage_threads
    shell:
        deidpipe_command(
            "stage --dicom-dir {params.dicom_dir:q} --profile " + quoted(PROFILE_YAML)
            + " --manifest {output.manifest:q} --threads {threads}"
        )
