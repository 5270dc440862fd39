import sys

from gemini_webhooks.cli import main

sys.exit(main())
