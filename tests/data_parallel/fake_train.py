"""Stands in for `pdm-bench train` in a launched process: fails as $FAKE_OUTCOME says, without training.

error: exits 2 (a config error). diverged: process 0 writes a failed train.json with $FAKE_TRAIN_ID, all exit 3.
"""

import json
import os
import sys
from pathlib import Path

out = Path(sys.argv[sys.argv.index("--out") + 1])
if os.environ["FAKE_OUTCOME"] == "error":
    sys.exit(2)
if os.environ.get("RANK", "0") == "0":
    (out / "train.json").write_text(json.dumps({"status": "failed", "train_id": os.environ["FAKE_TRAIN_ID"]}))
sys.exit(3)
