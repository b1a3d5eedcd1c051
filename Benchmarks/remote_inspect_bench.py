#!/usr/bin/env python3
"""Header-only inspection of a remote checkpoint: moetool inspect hf://... against hf-mem, in one run, against
the same local stand-in for the Hub (Tests/HubServer/hub_server.py) serving the DeepSeek-V3 skeleton
(Benchmarks/deepseek_v3_skeleton.py: 163 shards, 91,991 tensors, 641 GiB of sparse tensor data).

    python3 -m venv ~/moetool-venv && ~/moetool-venv/bin/pip install -r Benchmarks/requirements.txt
    ~/moetool-venv/bin/python Benchmarks/remote_inspect_bench.py [--runs 3]

hf-mem talks only to https://huggingface.co; this script points its HTTP client at the local server by
rewriting each request's URL (an httpx event hook), nothing else. Reports wall time and bytes the server sent
per run, and checks moetool's --json equals a local inspect of the same skeleton.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
MOETOOL = os.path.join(ROOT, ".build", "release", "moetool")

HF_MEM_LAUNCHER = r"""
import sys, httpx2, hf_mem.cli
local = sys.argv.pop(1)
original = httpx2.AsyncClient.__init__
def patched(self, *a, **k):
    async def rewrite(request):
        if request.url.host == "huggingface.co":
            request.url = httpx2.URL(local + request.url.raw_path.decode())
    k.setdefault("event_hooks", {}).setdefault("request", []).append(rewrite)
    k["http2"] = False
    original(self, *a, **k)
httpx2.AsyncClient.__init__ = patched
sys.exit(hf_mem.cli.main())
"""


def stats(port):
    return json.load(urllib.request.urlopen(f"http://127.0.0.1:{port}/_stats"))


def timed(cmd, port, env=None):
    before = stats(port)["body_bytes"]
    start = time.monotonic()
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    seconds = time.monotonic() - start
    if r.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return seconds, stats(port)["body_bytes"] - before, r.stdout


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--skeleton", default="/tmp/moetool-dsv3-skeleton")
    a = p.parse_args()
    if not os.path.isdir(a.skeleton):
        subprocess.run([sys.executable, os.path.join(HERE, "deepseek_v3_skeleton.py"), a.skeleton], check=True)
    subprocess.run(["swift", "build", "-c", "release"], cwd=ROOT, check=True, capture_output=True)
    root = tempfile.mkdtemp()
    os.symlink(a.skeleton, os.path.join(root, "deepseek-ai--DeepSeek-V3"))
    server = subprocess.Popen([sys.executable, os.path.join(ROOT, "Tests", "HubServer", "hub_server.py"), "--root", root],
                              stdout=subprocess.PIPE, text=True)
    port = int(server.stdout.readline().split()[1])
    endpoint = f"http://127.0.0.1:{port}"
    try:
        env = dict(os.environ, HF_ENDPOINT=endpoint)
        local = subprocess.run([MOETOOL, "inspect", "--json", a.skeleton], capture_output=True, text=True).stdout
        rows = {"moetool inspect hf://": [], "hf-mem": []}
        for _ in range(a.runs):
            s, b, out = timed([MOETOOL, "inspect", "--json", "hf://deepseek-ai/DeepSeek-V3"], port, env)
            if out.replace("hf://deepseek-ai/DeepSeek-V3", "P") != local.replace(a.skeleton, "P"):
                sys.exit("moetool's remote report differs from the local one")
            rows["moetool inspect hf://"].append((s, b))
            s, b, _ = timed([sys.executable, "-c", HF_MEM_LAUNCHER, endpoint, "--model-id", "deepseek-ai/DeepSeek-V3", "--json-output"],
                            port)
            rows["hf-mem"].append((s, b))
        print(f"DeepSeek-V3 skeleton (163 shards, 641 GiB of tensor data) from a local stand-in for the Hub, {a.runs} runs")
        print(f"{'tool':<24}{'seconds (best, median)':>26}{'MB moved per run':>20}")
        for tool, r in rows.items():
            secs = sorted(x[0] for x in r)
            print(f"{tool:<24}{secs[0]:>14.2f}{secs[len(secs) // 2]:>12.2f}{r[0][1] / 1e6:>20.2f}")
        m = sorted(x[0] for x in rows["moetool inspect hf://"])[a.runs // 2]
        h = sorted(x[0] for x in rows["hf-mem"])[a.runs // 2]
        print(f"hf-mem / moetool (median wall time): {h / m:.2f}")
    finally:
        server.terminate()


if __name__ == "__main__":
    main()
