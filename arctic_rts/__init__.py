"""arctic-rts: map retrogressive thaw slumps across the Arctic from Sentinel-2."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__"]
