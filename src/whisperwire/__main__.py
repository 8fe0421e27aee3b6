from whisperwire.cli import main

raise SystemExit(main())
