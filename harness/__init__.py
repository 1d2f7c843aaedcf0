"""The conformance and load harness for SSE job-progress APIs: observe, record, judge."""

from ._api import ApiClient, Reply
from ._client import Limits, ReconnectPolicy, Segment, Stream, StreamError, Trace, follow, record, stream
from ._decoder import Comment, Decoder, Event, Line, Notice, Record, Retry, Violation
from ._profile import Profile, ProfileError, load_profile
from ._proxy import FaultProxy
from ._version import VERSION
from ._context import Context, parse_data
from ._errors import HarnessError, Skip, TargetFault
from ._live import LiveStream
from ._outcomes import CaseResult, Finding, Judge, Measure, Outcome, Plot, Severity
from ._registry import Case, case
from ._client import End
from ._starvation import Explained, Starvation

__all__ = [
    # observing: the decoder, the recording client, the fault proxy, profiles, the REST client
    "ApiClient", "Comment", "Decoder", "End", "Event", "FaultProxy", "Limits", "Line", "Notice", "Profile",
    "ProfileError", "ReconnectPolicy", "Record", "Reply", "Retry", "Segment", "Stream", "StreamError", "Trace",
    "Violation", "follow", "load_profile", "record", "stream",
    # writing a case of one's own (docs/writing-cases.md); the pure checks are scenarios.checks
    "Case", "CaseResult", "Context", "Finding", "HarnessError", "Judge", "LiveStream", "Measure", "Outcome", "Plot",
    "Severity", "Skip", "TargetFault", "case", "parse_data",
    # timing verdicts: how starved the machine was in a window (Context.starved())
    "Explained", "Starvation",
]
__version__ = VERSION
