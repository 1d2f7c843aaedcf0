"""Load test on locust with the harness's SSE user: a starting point for a locustfile of your own.

    pip install -e '.[load]'
    locust -f load/locustfile.py --headless -u 50 -r 10 --run-time 60s --host http://127.0.0.1:8080
    sse-harness load --locustfile load/locustfile.py --target http://127.0.0.1:8080 --users 50 --run-time 60s

The user creates a job (or takes a place on one, --sse-subscribers), follows its stream with the
harness's Decoder and judges every event (docs/load.md); the --sse-* options set the mix. The
class name matches the one `sse-harness load` ships, so a master and workers may run either file.
"""

from locust import between

from harness.load import SSEUser


class JobStreamUser(SSEUser):
    wait_time = between(0.2, 1.0)  # between one job's end and the next job
