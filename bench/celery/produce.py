"""Enqueues N no-op tasks (each publish confirmed) and waits until the
worker has run them all; prints `celery jobs=N seconds=S rate=R`."""

import sys
import time
import uuid

from noop_tasks import counter, noop

n = int(sys.argv[1])
run = f"bench-celery-{uuid.uuid4().hex}"
started = time.monotonic()
for _ in range(n):
    noop.delay(run)
while int(counter.get(run) or 0) < n:
    time.sleep(0.01)
seconds = time.monotonic() - started
counter.delete(run)
print(f"mode=celery jobs={n} seconds={seconds:.2f} rate={n / seconds:.0f}")
