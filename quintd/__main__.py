from quintd.cli import main

raise SystemExit(main())
