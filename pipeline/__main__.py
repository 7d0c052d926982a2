"""`python -m pipeline` runs the feverdream command line."""

from pipeline.cli import main

raise SystemExit(main())
