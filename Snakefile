# De-identify DICOM sessions with a site profile, verify them, and import them into Flywheel.
# Run: snakemake --cores 4        (settings: config.yaml; sessions: sessions.tsv; see README.md)
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/profile.smk"
include: "workflow/rules/stage.smk"
include: "workflow/rules/verify.smk"
include: "workflow/rules/upload.smk"


rule all:
    input:
        final_targets(),
    default_target: True


onstart:
    start_run()


onsuccess:
    finish_run(succeeded=True)


onerror:
    finish_run(succeeded=False)
