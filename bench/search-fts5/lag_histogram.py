"""p50/p99 of the search service's `search_index_lag_seconds` (from an
event's time to its change being searchable), read from its /metrics text
on stdin, interpolated within Prometheus buckets."""

import re
import sys

buckets = []
for line in sys.stdin:
    m = re.match(r'search_index_lag_seconds_bucket\{le="([^"]+)"\} (\d+)', line)
    if m:
        le = float("inf") if m.group(1) == "+Inf" else float(m.group(1))
        buckets.append((le, int(m.group(2))))
buckets.sort()
total = buckets[-1][1] if buckets else 0


def quantile(q):
    rank = q * total
    low, below = 0.0, 0
    for le, count in buckets:
        if count >= rank:
            if le == float("inf"):
                return low
            share = (rank - below) / max(1, count - below)
            return low + (le - low) * share
        low, below = le, count
    return low


within = next((c for le, c in buckets if le == 1.0), 0)
print(
    f"service histogram, {total} events: p50 {quantile(0.5) * 1000:.0f} ms, p99 {quantile(0.99) * 1000:.0f} ms,"
    f" {100 * within / max(1, total):.1f}% within 1 s"
)
