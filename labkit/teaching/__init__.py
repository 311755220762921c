"""What notebooks use: the Session (live or replay), configurations side by side."""
from labkit.teaching.display import compare, listen, side_by_side, tls_side_by_side
from labkit.teaching.session import Session

__all__ = ["Session", "compare", "listen", "side_by_side", "tls_side_by_side"]
