"""A stand-in for RunPod's job API on loopback, for running `python handler.py` as on RunPod.

The real `runpod` SDK inside the worker takes jobs from RUNPOD_WEBHOOK_GET_JOB, posts progress
and results to RUNPOD_WEBHOOK_POST_OUTPUT, pings RUNPOD_WEBHOOK_PING and long-polls the
job-stop channel for cancellations. This server plays the other end of those calls and records
what the worker sent, so tests see exactly what RunPod (and so the caller's /status) would see.
"""

from __future__ import annotations

import json
import queue
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse


class FakeRunPod:
    def __init__(self) -> None:
        self.jobs: "queue.Queue[dict]" = queue.Queue()
        self.stops: "queue.Queue[str]" = queue.Queue()
        self.posts: list[dict] = []  # {"job_id", "status", "output", "error", "stopPod", ...}
        self.pings = 0
        self._changed = threading.Condition()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if path.startswith("/job-take/"):
                    try:
                        job = fake.jobs.get(timeout=0.5)
                    except queue.Empty:
                        self._reply(204)
                        return
                    self._reply(200, job)
                elif path.startswith("/job-stop/"):
                    try:
                        job_id = fake.stops.get(timeout=1.0)
                    except queue.Empty:
                        self._reply(204)
                        return
                    self._reply(200, {"jobsToStop": [job_id]})
                elif path.startswith("/ping/"):
                    fake.pings += 1
                    self._reply(200, {})
                else:
                    self._reply(404, {})

            def do_POST(self) -> None:
                url = urlparse(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if url.path.startswith("/job-done/"):
                    record = json.loads(body.decode("utf-8"))
                    record["job_id"] = url.path.rsplit("/", 1)[-1]
                    record["is_stream"] = parse_qs(url.query).get("isStream", [""])[0]
                    with fake._changed:
                        fake.posts.append(record)
                        fake._changed.notify_all()
                    self._reply(200, {})
                else:
                    self._reply(404, {})

            def _reply(self, status: int, payload: dict | None = None) -> None:
                data = b"" if payload is None else json.dumps(payload).encode()
                self.send_response(status)
                if payload is not None:
                    self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def env(self) -> dict[str, str]:
        """What RunPod sets on a serverless worker, pointed at this server."""
        return {
            "RUNPOD_WEBHOOK_GET_JOB": f"{self.url}/job-take/$ID?token=t",
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{self.url}/job-done/$RUNPOD_POD_ID/$ID?token=t",
            "RUNPOD_WEBHOOK_PING": f"{self.url}/ping/$RUNPOD_POD_ID?token=t",
            "RUNPOD_AI_API_KEY": "test-key",
            "RUNPOD_POD_ID": "worker-1",
            "RUNPOD_PING_INTERVAL": "1000",
        }

    def submit(self, job_id: str, job_input: dict, **extra) -> None:
        self.jobs.put({"id": job_id, "input": job_input, **extra})

    def stop(self, job_id: str) -> None:
        self.stops.put(job_id)

    def wait_for(self, predicate, timeout: float = 60.0) -> dict:
        """Wait until a post satisfies `predicate`; return it."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                for post in self.posts:
                    if predicate(post):
                        return post
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"no matching post from the worker; got {self.summary()}")
                self._changed.wait(left)

    def final(self, job_id: str, timeout: float = 90.0) -> dict:
        return self.wait_for(lambda p: p["job_id"] == job_id and p.get("status") != "IN_PROGRESS", timeout)

    def progress(self, job_id: str) -> list[dict]:
        return [p["output"] for p in self.posts if p["job_id"] == job_id and p.get("status") == "IN_PROGRESS"]

    def summary(self) -> list[str]:
        return [f"{p['job_id']}:{p.get('status') or ('error' if 'error' in p else 'done')}" for p in self.posts]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
