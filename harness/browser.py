"""Browser cases of one's own: Chromium's EventSource behind the fault proxy and a recording tap, and its sessions."""

from ._browser import (BROWSER_ENV, Browser, BrowserNotFound, BrowserRig, BrowserTimeout, BrowserUnavailable,
                       Observation, PageHandle, PageTrace, canonical, find_browser, open_browser)
from ._browser_jobs import OUTAGE_DELAY, SEVEN_LAST_STAGE, job_sessions
from ._browser_session import (COLLIDING_NAMES, CUT_DELAY, CUTS, OVERDUE_HELD, OVERDUE_LIMIT, OVERDUE_RECONNECT,
                               OVERDUE_SILENT, PAGE_OPEN, POLL, Recording, Room, Session, SessionRecorder,
                               browser_path, connection_held, cut_after_events, cut_room, event_seen,
                               job_stream_overdue, observe_browser_starvation, session_failure, starvation_allowance,
                               stream_retry, target_port)
from ._browser_stream import DEFAULT_RETRY, WINDOW_SECONDS, Overdue, stream_overdue, stream_sessions
from ._browser_tap import Exchange, Tap

__all__ = [
    # the browser: found by path (none: skip), launched in its own thread; its trouble is HarnessError
    "BROWSER_ENV", "Browser", "BrowserNotFound", "BrowserTimeout", "BrowserUnavailable", "browser_path",
    "find_browser", "observe_browser_starvation", "open_browser",
    # a page at the target's origin (a tap and a fault proxy in front of the target) and what it recorded
    "BrowserRig", "COLLIDING_NAMES", "Exchange", "Observation", "PageHandle", "PageTrace", "Tap", "canonical",
    "target_port",
    # a session: its jobs, its wait on the target (ending at the contract's deadlines), cuts at the proxy
    "CUTS", "CUT_DELAY", "OVERDUE_HELD", "OVERDUE_LIMIT", "OVERDUE_RECONNECT", "OVERDUE_SILENT", "PAGE_OPEN", "POLL",
    "Recording", "Room", "Session", "SessionRecorder", "connection_held", "cut_after_events", "cut_room",
    "event_seen", "job_stream_overdue", "session_failure", "starvation_allowance", "stream_retry",
    # family 10's four sessions on the contract's jobs (plain, cut, outage, seven), recorded once per run
    "OUTAGE_DELAY", "SEVEN_LAST_STAGE", "job_sessions",
    # family 14's sessions on any GET stream (plain, cut), recorded once per run, and their wait's rule
    "DEFAULT_RETRY", "Overdue", "WINDOW_SECONDS", "stream_overdue", "stream_sessions",
]
