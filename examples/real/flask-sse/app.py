"""Notifications on Flask-SSE over Redis (run: gunicorn app:app --worker-class gevent, as its docs
say; REDIS_URL names the Redis). The library's blueprint streams the `sse` channel at GET /stream;
a publisher in the app sends a `notice` every 0.5 s with an increasing id.

Flask-SSE has no replay (its stream "Ignores any Last-Event-ID headers") and sends no keep-alive:
nothing is written between two publishes. Redis pub/sub keeps nothing, so a notice published
while a reader reconnects is gone for that reader."""

import os
import threading
import time

from flask import Flask
from flask_sse import sse

app = Flask(__name__)
app.config["REDIS_URL"] = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379")
app.register_blueprint(sse, url_prefix="/stream")


def publish_notices() -> None:
    with app.app_context():
        for n in range(1, 1 << 62):
            time.sleep(0.5)
            sse.publish({"n": n, "text": f"notice {n}", "ts": int(time.time() * 1000)}, type="notice", id=n)


threading.Thread(target=publish_notices, daemon=True).start()
