"""``python -m layersync_middleware``: the ``layersync`` command."""

import sys

from .cli import main

sys.exit(main())
