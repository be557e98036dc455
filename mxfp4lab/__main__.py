"""``python -m mxfp4lab ...`` = the ``mxfp4lab`` command (:mod:`mxfp4lab.cli`)."""

import sys

from .cli import main

sys.exit(main())
