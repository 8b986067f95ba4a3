"""Refuses to start the install when the disk cannot hold it: pip would otherwise stop half-way with ENOSPC.

The pinned PyTorch stack is ~5.6 GB installed (on x86_64 PyPI has only torch's CUDA build: torch 1.2 GB, nvidia
runtime packages 2.7 GB, triton 0.7 GB), and pip needs room for the downloaded wheels while it unpacks them.
    python workflow/scripts/check_disk.py VENV_DIR GIGABYTES
"""

import shutil
import sys
import tempfile

venv, needed_gb = sys.argv[1], float(sys.argv[2])
for where, path in (("the virtual environment", venv), ("pip's temporary files", tempfile.gettempdir())):
    free_gb = shutil.disk_usage(path).free / 1e9
    if free_gb < needed_gb:
        sys.exit(f"make setup: {free_gb:.1f} GB free on the disk of {where} ({path}); the pinned packages need about "
                 f"{needed_gb:.0f} GB (PyTorch's CUDA build is the only one PyPI has for x86_64). Free some space, or "
                 f"point VENV= (and TMPDIR=) at a disk with room, then run make again.")
