"""``python -m boothop.server``: the same program as its installed command."""

from .cli import main

raise SystemExit(main())
