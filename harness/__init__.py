"""The conformance and load harness for SSE job-progress APIs: observe, record, judge."""

from ._api import ApiClient, Reply
from ._client import End, Limits, ReconnectPolicy, Segment, Stream, StreamError, Trace, follow, record, stream
from ._context import Context, parse_data
from ._decoder import Comment, Decoder, Event, Line, Notice, Record, Retry, Violation
from ._errors import HarnessError, ProfileError, Skip, SseHarnessError, TargetFault, UsageError
from ._live import LiveStream
from ._outcomes import CaseResult, Finding, Judge, Measure, Outcome, Plot, Severity
from ._profile import Profile, load_profile
from ._proxy import FaultProxy
from ._registry import REGISTRY, Case, case
from ._restart import Restart
from ._run_case import run_case
from ._starvation import Explained, Starvation
from ._stream_profile import StreamRequest, pointer_get
from ._target import Timing
from ._tasks import background_nursery
from ._version import VERSION
from ._wiretap import ConnectionWire

__all__ = [
    # observing: the decoder, the recording client, the fault proxy (and what it saw on each
    # connection), profiles and the stream they name, the REST client
    "ApiClient", "Comment", "ConnectionWire", "Decoder", "End", "Event", "FaultProxy", "Limits", "Line", "Notice",
    "Profile", "ReconnectPolicy", "Record", "Reply", "Retry", "Segment", "Stream", "StreamError", "StreamRequest",
    "Trace", "Violation", "follow", "load_profile", "pointer_get", "record", "stream",
    # writing a case of one's own (docs/writing-cases.md): the pure checks are harness.checks, the
    # browser's machinery harness.browser, a reverse proxy in front of the target harness.nginx
    "REGISTRY", "Case", "CaseResult", "Context", "Finding", "Judge", "LiveStream", "Measure", "Outcome", "Plot",
    "Restart", "Severity", "Timing", "case", "parse_data", "run_case",
    # whose fault it is: the user's (UsageError, ProfileError), ours (HarnessError), the target's (TargetFault)
    "HarnessError", "ProfileError", "Skip", "SseHarnessError", "TargetFault", "UsageError",
    # timing verdicts: how starved the machine was in a window (Context.starved())
    "Explained", "Starvation",
    # a nursery for background work that lets a case's own exception leave as itself
    "background_nursery",
]
__version__ = VERSION
