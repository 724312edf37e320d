"""rulekit: measure whether generative models learn the hidden rules between image features."""

from rulekit.hookspecs import hookimpl

__version__ = "0.1.0"

__all__ = ["__version__", "hookimpl"]
