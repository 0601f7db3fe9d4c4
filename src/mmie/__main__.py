"""Allow ``python -m mmie``."""

from mmie.cli import main

raise SystemExit(main())
