"""A stand-in for the Hugging Face Hub on 127.0.0.1, for moetool's remote-inspection tests.

    python3 hub_server.py --root DIR [--flaky] [--token SECRET]

Serves DIR/<org>--<name>/<file> under the Hub's URL scheme: GET /<org>/<name>/resolve/<rev>/<file> answers
302 with a redirect to /cdn/<org>/<name>/<rev>/<file> (as the Hub redirects to its CDN), which serves the bytes
with Range support (206 + Content-Range). Repositories whose name starts with "gated" need
"Authorization: Bearer <SECRET>" (401 otherwise). With --flaky the first request for each URL and Range answers
503 with Retry-After: 0 (every request fails once, and its retry is answered: a count over all requests would let
concurrent retries meet the failing turn again and again). The redirect names 127.0.0.1, so a client that asked for localhost meets another host, as with the
Hub's CDN ("cdn_with_token" counts CDN requests that carried a token). GET /api/models/<org>/<name>/tree/<rev> lists the files with their sizes. GET /_stats returns {"requests", "body_bytes", "ranges"} (body bytes of file answers).
Prints "PORT <n>" once listening, and exits with its parent. Standard library only; binds 127.0.0.1.
"""
import argparse
import json
import os
import re
import signal
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOCK = threading.Lock()
STATS = {"requests": 0, "body_bytes": 0, "ranges": [], "cdn_with_token": 0}
SEEN = set()  # (path, Range) pairs asked before: --flaky fails the first of each


def make_handler(root, flaky, token):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def send_plain(self, code, body=b"", headers=()):
            self.send_response(code)
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if body:
                self.wfile.write(body)

        def do_GET(self):
            if self.path == "/_stats":
                with LOCK:
                    body = json.dumps(STATS).encode()
                return self.send_plain(200, body, [("Content-Type", "application/json")])
            key = (self.path, self.headers.get("Range"))
            with LOCK:
                STATS["requests"] += 1
                first = key not in SEEN
                SEEN.add(key)
            if flaky and first:
                return self.send_plain(503, b"busy", [("Retry-After", "0")])
            m = re.fullmatch(r"/api/models/([^/]+)/([^/]+)/tree/([^/?]+)(\?.*)?", self.path)
            if m:
                # The Hub's file listing (what hf-mem asks first): every file with its size.
                base = os.path.join(root, f"{m.group(1)}--{m.group(2)}")
                if not os.path.isdir(base):
                    return self.send_plain(404, b"not found")
                files = []
                for d, _, names in os.walk(base, followlinks=True):
                    for n in sorted(names):
                        full = os.path.join(d, n)
                        files.append({"type": "file", "path": os.path.relpath(full, base), "size": os.path.getsize(full)})
                return self.send_plain(200, json.dumps(files).encode(), [("Content-Type", "application/json")])
            m = re.fullmatch(r"/([^/]+)/([^/]+)/resolve/([^/]+)/(.+)", self.path)
            if m:
                org, name, rev, file = m.groups()
                if name.startswith("gated") and self.headers.get("Authorization") != f"Bearer {token}":
                    return self.send_plain(401, b"gated")
                # To another host name than the one asked (127.0.0.1 when asked as localhost), as the Hub's CDN is.
                cdn = f"http://127.0.0.1:{self.server.server_address[1]}"
                return self.send_plain(302, b"", [("Location", f"{cdn}/cdn/{org}/{name}/{rev}/{file}")])
            m = re.fullmatch(r"/cdn/([^/]+)/([^/]+)/([^/]+)/(.+)", self.path)
            if not m:
                return self.send_plain(404, b"no such path")
            org, name, rev, file = m.groups()
            if self.headers.get("Authorization"):
                with LOCK:
                    STATS["cdn_with_token"] += 1
            path = os.path.join(root, f"{org}--{name}", file)
            if ".." in file.split("/") or not os.path.isfile(path):
                return self.send_plain(404, b"not found")
            size = os.path.getsize(path)
            rng = self.headers.get("Range")
            with open(path, "rb") as f:
                if rng:
                    r = re.fullmatch(r"bytes=(\d+)-(\d+)", rng)
                    start, end = int(r.group(1)), min(int(r.group(2)), size - 1)
                    if start >= size:
                        return self.send_plain(416, b"", [("Content-Range", f"bytes */{size}")])
                    f.seek(start)
                    body = f.read(end - start + 1)
                    with LOCK:
                        STATS["body_bytes"] += len(body)
                        STATS["ranges"].append([file, start, end])
                    return self.send_plain(206, body, [("Content-Range", f"bytes {start}-{end}/{size}")])
                body = f.read()
            with LOCK:
                STATS["body_bytes"] += len(body)
                STATS["ranges"].append([file, 0, size - 1])
            return self.send_plain(200, body)

    return Handler


def watch_parent(parent):
    """Exit when the process that started us is gone (a test runner that died never leaves a server behind)."""
    while os.getppid() == parent:
        time.sleep(0.5)
    os._exit(0)


def main():
    # A parent may start us with signals blocked (Foundation's Process does): SIGTERM must still end us.
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGTERM, signal.SIGINT, signal.SIGHUP})
    threading.Thread(target=watch_parent, args=(os.getppid(),), daemon=True).start()
    p = argparse.ArgumentParser()
    p.add_argument("--root", required=True)
    p.add_argument("--flaky", action="store_true")
    p.add_argument("--token", default="secret")
    a = p.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(a.root, a.flaky, a.token))
    print(f"PORT {server.server_address[1]}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
