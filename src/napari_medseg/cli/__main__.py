"""``python -m napari_medseg.cli``: the ``medseg`` command."""

import sys

from .main import main

sys.exit(main())
