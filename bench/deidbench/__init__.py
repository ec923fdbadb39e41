"""The pipeline's benchmark (run it with ``python bench/run.py``), by topic:

- ``processes``: measuring a command's process tree (wall, CPU, RSS, PSS, others' CPU);
- ``trees``: synthetic trees of scanner-sized DICOM sessions, the page cache, the trash;
- ``commands``: the command lines measured (``cp -r``, reading once, ``deidpipe``,
  ``snakemake``, loading the sheet); ``fwmig``: flywheel-migration in its own venv;
- ``checks``: that what was measured did its work;
- ``profiling``: pyinstrument profiles rendered as markdown;
- ``machine``: the machine and the pipeline code measured;
- ``report``: the results and the markdown writer;
- ``context``: what the sections share; ``options``: the command line;
- ``sections``: one module per section of the results; ``main``: runs them in order.
"""
