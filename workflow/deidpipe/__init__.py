"""De-identify DICOM sessions with Flywheel's engine, verify them, and import them into Flywheel.

One module per pipeline stage: sheet, profile, stage, verify, upload, report. Each is usable
without Snakemake; the rules in ``workflow/rules`` call them through ``deidpipe.cli``.
"""

__version__ = "0.1.0"
