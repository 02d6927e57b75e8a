"""``python -m boothop.relay.lab``: the same program as its installed command."""

from .cli import main

raise SystemExit(main())
