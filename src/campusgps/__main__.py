from campusgps.cli.main import main

raise SystemExit(main())
