"""``python -m xbar.compiler.cli`` (and torchrun's ``-m``): the ``xbar`` command line."""

import sys

from .main import main

sys.exit(main())
