from gemini_webhooks.controlplane.cli import main

raise SystemExit(main())
