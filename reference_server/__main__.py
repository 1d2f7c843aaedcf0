"""Allow ``python -m reference_server``."""

from ._cli import main

raise SystemExit(main())
