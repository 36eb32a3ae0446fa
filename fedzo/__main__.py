"""`python -m fedzo`: the same as the `fedzo` command."""

from fedzo.cli import main

raise SystemExit(main())
