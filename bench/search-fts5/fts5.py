"""SQLite FTS5 (Python's sqlite3) on the documents search-load generates:
the peer of the embedded search engine in bench/search-vs-fts5.sh.

  python3 fts5.py index DB DOCS          # documents per second
  python3 fts5.py query DB QUERIES SECS  # one caller, queries in turn

FTS5 has no typo tolerance, so its best equivalent of the fuzzy two-term
query is the pair spelt right (the second column of QUERIES), the last
word as a prefix, OR-ed, ranked by BM25 with the title weighing twice the
content (the seed's `title^2`), top 10 -- less work than the engine does
(it also counts every match, facets them and highlights the page).
"""

import json
import sqlite3
import sys
import time


def index(db, docs):
    con = sqlite3.connect(db)
    con.execute("PRAGMA journal_mode = WAL")
    con.execute("PRAGMA synchronous = NORMAL")
    con.execute(
        "CREATE VIRTUAL TABLE IF NOT EXISTS posts USING fts5(title, content, tags UNINDEXED,"
        " author_id UNINDEXED, created_at UNINDEXED, tokenize = 'unicode61')"
    )
    started = time.perf_counter()
    n = 0
    batch = []
    with open(docs) as f:
        for line in f:
            doc = json.loads(line)
            batch.append((doc["id"], doc["title"], doc["content"], doc["author_id"], doc["created_at_ms"]))
            if len(batch) == 500:
                with con:
                    con.executemany(
                        "INSERT INTO posts (rowid, title, content, author_id, created_at) VALUES (?, ?, ?, ?, ?)",
                        batch,
                    )
                n += len(batch)
                batch = []
    if batch:
        with con:
            con.executemany(
                "INSERT INTO posts (rowid, title, content, author_id, created_at) VALUES (?, ?, ?, ?, ?)",
                batch,
            )
        n += len(batch)
    seconds = time.perf_counter() - started
    print(f"indexed {n} docs in {seconds:.1f}s: {n / seconds:.0f} docs/s")


def query(db, queries, seconds):
    con = sqlite3.connect(db)
    with open(queries) as f:
        pairs = [line.rstrip("\n").split("\t")[1].split() for line in f if "\t" in line]
    sql = (
        "SELECT rowid, title, bm25(posts, 2.0, 1.0) AS score FROM posts WHERE posts MATCH ?"
        " ORDER BY score LIMIT 10"
    )
    latencies = []
    hits = 0
    deadline = time.perf_counter() + seconds
    started = time.perf_counter()
    i = 0
    while time.perf_counter() < deadline:
        a, b = pairs[i % len(pairs)]
        i += 1
        match = f'"{a}" OR "{b}"*'
        t = time.perf_counter()
        rows = con.execute(sql, (match,)).fetchall()
        latencies.append(time.perf_counter() - t)
        hits += len(rows)
    elapsed = time.perf_counter() - started
    latencies.sort()

    def pct(p):
        at = max(1, min(len(latencies), int(-(-len(latencies) * p // 1)))) - 1
        return latencies[at] * 1000

    print(
        f"sqlite fts5, prefix, no typos: {len(latencies)} queries in {elapsed:.1f}s:"
        f" {len(latencies) / elapsed:.0f} q/s, p50 {pct(0.5):.2f} ms, p99 {pct(0.99):.2f} ms,"
        f" {hits / max(1, len(latencies)):.1f} hits/query"
    )


if __name__ == "__main__":
    if sys.argv[1] == "index":
        index(sys.argv[2], sys.argv[3])
    elif sys.argv[1] == "query":
        query(sys.argv[2], sys.argv[3], float(sys.argv[4]))
    else:
        sys.exit("usage: fts5.py index DB DOCS | query DB QUERIES SECONDS")
