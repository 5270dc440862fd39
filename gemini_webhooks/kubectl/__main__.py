import sys

from gemini_webhooks.kubectl.cli import main

sys.exit(main())
