from lmdev.cli import main

raise SystemExit(main())
