#!/usr/bin/python3
"""kill -9 of the coordinator while a batch runs loses nothing (issue 16, durability).

A coordinator with --state-dir and fixed ports (so the node redials the restarted one) and one
node of the bundled model. A reference batch over the input file runs without interruption;
then a second batch over the same file is hit by kill -9 of the coordinator twice, right after
batches.create (validating or just started) and mid-run, each time restarted on the same
--state-dir. Checked after the restarts: the batch completes; the output file has every
custom_id exactly once and nothing else; every text (greedy lines, lines with a seed, and
sampled lines without one, which get a seed from the file and custom_id; lines of n = 2 choices,
every choice) equals the reference
run's; the restarted coordinator admitted no more requests than were left unrecorded (finished
ones are not run again: Health.requests_total <= the requests of the lines not completed before
the kill).
Last, the database is turned back into schema 1 (no batches.cached_tokens, user_version 1, as a
Tessera of the first Batch API release wrote it): the restarted coordinator upgrades it in place
and serves the finished batch as it was.
Then a kill during finalizing: the output files and the final state are written in one
transaction (co_store_batch_finish), so a kill inside it leaves the batch `finalizing` with no
output file. The database is put in exactly that state (the finished batch's files deleted, its
status finalizing) and the coordinator restarted: the batch completes again with the same lines,
each once, and no request runs again.
  test_batch_recovery.py --bin-dir BUILD/bin --pydir BUILD/rpc/ts_proto/python
"""
import http.client
import json
import os
import signal
import sys
import time

TOTAL = 600
PROMPTS = ["Once upon a time", "The little dog", "Lily wanted", "One day, a bird", "Tom and Sue"]


def lines():
    out = []
    for i in range(TOTAL):
        body = {"prompt": PROMPTS[i % 5], "max_tokens": 120, "ignore_eos": True,
                "temperature": 0}
        if i % 3 == 1:
            body.update(temperature=0.9, seed=1000 + i)
            if i % 6 == 1:
                body.update(n=2)  # two choices: both rerun after a kill, the same texts
        elif i % 3 == 2:
            body.update(temperature=0.9)  # no seed: the runner derives one
        out.append({"custom_id": "r-%03d" % i, "method": "POST", "url": "/v1/completions",
                    "body": body})
    return out


def texts(o):
    """Every choice's text of an output line, in index order."""
    return [ch["text"] for ch in sorted(o["response"]["body"]["choices"],
                                        key=lambda ch: ch["index"])]


def main():
    import harness
    import serving_cluster as sc
    from test_http_api import raw
    from test_batch_api import multipart

    f = harness.Failures()
    c = sc.from_args()
    try:
        http_port, worker_port = harness.free_port(), harness.free_port()
        state = os.path.join(c.tmp, "state")
        args = ("--http-listen", "127.0.0.1:%d" % http_port, "--state-dir", state,
                "--worker-listen", "127.0.0.1:%d" % worker_port)
        c.start_coordinator(*args)
        c.start_node("g0", "--connect-timeout-ms", "60000")
        c.wait_groups(1)

        data = b"".join(json.dumps(l).encode() + b"\n" for l in lines())
        body, hdr = multipart({"purpose": "batch"}, "in.jsonl", data)
        status, fdoc = raw(http_port, "POST", "/v1/files", body, hdr)
        f.check(status == 200, "upload: %s %s" % (status, fdoc))
        create = json.dumps({"input_file_id": fdoc["id"], "endpoint": "/v1/completions",
                             "completion_window": "24h"})
        jh = {"Content-Type": "application/json"}

        def get(bid):
            for _ in range(100):
                try:
                    return raw(http_port, "GET", "/v1/batches/" + bid)[1]
                except OSError:  # the coordinator is restarting
                    time.sleep(0.1)
            raise AssertionError("the coordinator does not answer")

        def wait(bid, pred, timeout=120):
            end = time.time() + timeout
            b = get(bid)
            while time.time() < end and not pred(b):
                time.sleep(0.05)
                b = get(bid)
            return b

        def outputs(b):
            conn = http.client.HTTPConnection("127.0.0.1", http_port, timeout=60)
            conn.request("GET", "/v1/files/%s/content" % b["output_file_id"])
            text = conn.getresponse().read().decode()
            conn.close()
            return [json.loads(l) for l in text.splitlines()]

        done = ("completed", "failed", "expired", "cancelled")
        status, ref = raw(http_port, "POST", "/v1/batches", create, jh)
        ref = wait(ref["id"], lambda b: b["status"] in done)
        f.check(ref["status"] == "completed", "the reference batch: %s" % ref)
        ref_text = {o["custom_id"]: texts(o)
                    for o in outputs(ref)}
        f.check(len(ref_text) == TOTAL, "reference: %d lines" % len(ref_text))

        def restart():
            c.coordinator.send_signal(signal.SIGKILL)
            c.coordinator.wait()
            c.start_coordinator(*args)
            c.wait_groups(1)  # the node redials the same worker port

        status, b = raw(http_port, "POST", "/v1/batches", create, jh)
        bid = b["id"]
        restart()  # 1: at once (validating, or the first requests running)
        b = wait(bid, lambda b: b["request_counts"]["completed"] >= TOTAL // 4 or
                 b["status"] in done)
        before = b["request_counts"]["completed"]
        f.check(b["status"] == "in_progress" and before < TOTAL,
                "mid-run before the second kill: %s %s" % (b["status"], b["request_counts"]))
        restart()  # 2: mid-run
        b = wait(bid, lambda b: b["status"] in done)
        f.check(b["status"] == "completed" and b["request_counts"]["completed"] == TOTAL and
                b["request_counts"]["failed"] == 0, "completed after the kills: %s" % b)
        admitted = c.health().requests_total
        two = sum(1 for l in lines() if l["body"].get("n") == 2)  # lines of two requests
        f.check(0 < admitted <= TOTAL - before + two,
                "finished requests not run again: %d admitted after the restart, %d lines (of "
                "at most %d requests) were left" % (admitted, TOTAL - before, TOTAL - before + two))
        out = outputs(b)
        ids = [o["custom_id"] for o in out]
        f.check(len(ids) == TOTAL and set(ids) == set(ref_text),
                "every custom_id exactly once: %d lines, %d distinct" % (len(ids), len(set(ids))))
        diff = [o["custom_id"] for o in out
                if texts(o) != ref_text.get(o["custom_id"])]
        f.check(not diff, "texts equal the uninterrupted run's (differ: %s)" % diff[:10])

        # a schema-1 database (before batches.cached_tokens) is upgraded at open
        import sqlite3
        c.coordinator.send_signal(signal.SIGKILL)
        c.coordinator.wait()
        db = sqlite3.connect(os.path.join(state, "tessera.db"))
        db.executescript("ALTER TABLE batches DROP COLUMN cached_tokens; PRAGMA user_version = 1;")
        db.close()
        c.start_coordinator(*args)
        old = get(bid)
        db = sqlite3.connect(os.path.join(state, "tessera.db"))
        version = db.execute("PRAGMA user_version").fetchone()[0]
        cols = [r[1] for r in db.execute("PRAGMA table_info(batches)")]
        db.close()
        f.check(version == 2 and "cached_tokens" in cols, "upgraded to schema 2: %s %s"
                % (version, cols))
        f.check(old["status"] == "completed" and old["request_counts"] == b["request_counts"] and
                old["usage"]["input_tokens_details"]["cached_tokens"] == 0,
                "the upgraded database serves the batch: %s" % old)

        # the state a kill during finalizing leaves
        FINALIZING = 3  # co_batch_status (coordinator/batch_store.h)
        c.coordinator.send_signal(signal.SIGKILL)
        c.coordinator.wait()
        db = sqlite3.connect(os.path.join(state, "tessera.db"))
        db.execute("DELETE FROM files WHERE id IN (SELECT output_file_id FROM batches WHERE id = ?"
                   " UNION SELECT error_file_id FROM batches WHERE id = ?)", (bid, bid))
        db.execute("UPDATE batches SET status = ?, output_file_id = NULL, error_file_id = NULL,"
                   " completed_at = NULL WHERE id = ?", (FINALIZING, bid))
        db.commit()
        db.close()
        c.start_coordinator(*args)
        again = wait(bid, lambda b: b["status"] in done)
        f.check(again["status"] == "completed" and again["output_file_id"] and
                again["request_counts"] == b["request_counts"],
                "finalizing after the restart: %s" % again)
        out = outputs(again) if again["output_file_id"] else []
        ids = [o["custom_id"] for o in out]
        diff = [o["custom_id"] for o in out
                if texts(o) != ref_text.get(o["custom_id"])]
        f.check(len(ids) == TOTAL and set(ids) == set(ref_text) and not diff,
                "finalized again: %d lines, %d distinct, %d texts differ" %
                (len(ids), len(set(ids)), len(diff)))
        f.check(c.health().requests_total == 0,
                "finalizing runs no request again: %d admitted" % c.health().requests_total)
    finally:
        sc.finish(c, f)


if __name__ == "__main__":
    sys.exit(main())
