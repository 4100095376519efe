"""Celery's side of bench/jobs.sh: a no-op task on the same RabbitMQ, with
publisher confirms and late acks (acked after the task ran, as the
platform's workers ack after the job's outcome is stored), so both sides
promise the same thing. Each run counts itself done in Redis, which is how
the producer sees the last task finish."""

import os

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
QUEUE = os.environ.get("BENCH_CELERY_QUEUE", "bench-celery")

app = Celery("noop_tasks", broker=BROKER)
app.conf.update(
    broker_transport_options={"confirm_publish": True},
    task_acks_late=True,
    task_default_queue=QUEUE,
    task_ignore_result=True,
    worker_prefetch_multiplier=32,
)
counter = redis.Redis(host="127.0.0.1", port=6379)


@app.task(name="noop")
def noop(run):
    counter.incr(run)
