"""Is the Hugging Face hub reachable? One quick TCP probe, shared by model and data loading, so an
offline machine fails in one line at once instead of after a minute of retries."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlparse


def hub_reachable(timeout: float = 3.0) -> bool:
    """True when the hub (or the mirror in $HF_ENDPOINT) accepts a connection, or when the user
    asked for offline mode (then the libraries read their local caches and say what is missing)."""
    if os.environ.get("HF_DATASETS_OFFLINE") == "1" or os.environ.get("HF_HUB_OFFLINE") == "1":
        return True
    url = urlparse(os.environ.get("HF_ENDPOINT", "https://huggingface.co"))
    port = url.port or (80 if url.scheme == "http" else 443)
    try:
        socket.create_connection((url.hostname or "huggingface.co", port), timeout=timeout).close()
        return True
    except OSError:
        return False
