"""Rule tasks: synthetic images whose features obey a hidden rule, and their measurers."""

from rulekit.tasks.base import Task

__all__ = ["Task"]
