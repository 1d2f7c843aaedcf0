"""The locustfile that `sse-harness load` runs: the shipped SSE user as it is."""

from harness.load import SSEUser


class JobStreamUser(SSEUser):
    """Follows job streams with the mix given by the --sse-* options."""
