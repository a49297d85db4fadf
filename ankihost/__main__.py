from ankihost.cli import main

raise SystemExit(main())
