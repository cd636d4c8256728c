"""`python -m nas.cli ...`: the same as the `nas` command."""
from nas.cli.main import main

raise SystemExit(main())
