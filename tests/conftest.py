import os
import sys
from pathlib import Path

# Shared test helpers live in tests/support and import as `support`.
sys.path.insert(0, str(Path(__file__).parent))

os.environ.setdefault("TLSRELAY_TESTING", "1")
