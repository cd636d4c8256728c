"""`python -m nas ...`: the same as the `nas` command."""
from nas.cli.main import main

raise SystemExit(main())
