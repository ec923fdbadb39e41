import sys

from deidpipe.cli import main

sys.exit(main())
