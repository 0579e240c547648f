from distill.cli import main

raise SystemExit(main())
