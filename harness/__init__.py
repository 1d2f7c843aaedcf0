"""The conformance and load harness for SSE job-progress APIs: observe, record, judge."""

from ._api import ApiClient, Reply
from ._client import Limits, ReconnectPolicy, Segment, Stream, StreamError, Trace, follow, record, stream
from ._decoder import Comment, Decoder, Event, Line, Notice, Record, Retry, Violation
from ._profile import Profile, ProfileError, load_profile
from ._proxy import FaultProxy

__all__ = [
    "ApiClient", "Comment", "Decoder", "Event", "FaultProxy", "Limits", "Line", "Notice", "Profile",
    "ProfileError", "ReconnectPolicy", "Record", "Reply", "Retry", "Segment", "Stream", "StreamError", "Trace", "Violation",
    "follow", "load_profile", "record", "stream",
]
__version__ = "0.1.0"
