"""What notebooks use: the Session (live or replay), side-by-side configurations."""
from labkit.teaching.session import Session, compare, side_by_side

__all__ = ["Session", "compare", "side_by_side"]
