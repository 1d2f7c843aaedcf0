"""The one place the version is written: the package's metadata (pyproject.toml)."""

from importlib import metadata

try:
    VERSION = metadata.version("sse-harness")
except metadata.PackageNotFoundError:  # run from a checkout that was never installed
    VERSION = "0+unknown"

__all__ = ["VERSION"]
