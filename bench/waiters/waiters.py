#!/usr/bin/env python3
"""Waiters: what a real `gpumod serve` costs idle with 50 configured services, and what 2,000
clients waiting at once on one loading model cost it. Standard library only.

1. Writes a config: one simulated 80 GB GPU, 50 presets of the test engine (`--load-ms` each),
   and starts the daemon on it (loopback, a port the kernel picks).
2. Idle: after --idle-s seconds, reads the daemon's threads and RSS (/proc/PID/status).
3. Storm: opens --clients connections at once, each a /v1/chat/completions call for the same
   model (not loaded), so every one waits while the model loads. While they wait, times one
   GET /metrics (a handler that needs a worker thread) and samples threads and RSS (the peak),
   then counts the answers: every client must get HTTP 200.
4. Stops the daemon and its services.

Exits 1 if a client got no answer or not 200. Usage:
  bench/waiters/waiters.py --gpumod build/app/gpumod --engine build/tools/test-engine/gpumod-test-engine
      [--services 50] [--clients 2000] [--load-ms 4000]
Run it for two builds in one session and compare (bench/README.md "Waiting clients").
"""
import argparse
import asyncio
import json
import os
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def write_config(root, engine, services, load_ms):
    os.makedirs(os.path.join(root, "presets"))
    os.makedirs(os.path.join(root, "modes"))
    with open(os.path.join(root, "gpumod.yaml"), "w") as f:
        f.write("gpus:\n  probe: sim\n  sim:\n    - name: bench-gpu\n      memory_mb: 81920\n"
                "policy:\n  queue_max: 100000\n")
    for i, port in enumerate(free_ports(services)):
        with open(os.path.join(root, "presets", f"m{i}.yaml"), "w") as f:
            f.write(f"id: m{i}\ndriver: llamacpp\nport: {port}\nvram_mb: 1000\nmodel_id: m{i}\n"
                    f"startup_timeout: 120\ncmd:\n  - {engine}\n  - --port\n  - \"{port}\"\n"
                    f"  - --protocol\n  - llamacpp\n  - --model\n  - m{i}\n  - --vram-mb\n  - \"1000\"\n"
                    f"  - --load-ms\n  - \"{load_ms}\"\n")
    with open(os.path.join(root, "modes", "blank.yaml"), "w") as f:
        f.write("id: blank\nname: blank\nservices: []\n")


def proc_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("Threads", "VmRSS"):
                out[key] = int(value.split()[0])
    return out["Threads"], out["VmRSS"] / 1024.0  # threads, MiB


async def one_call(port, body, results):
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        head = (f"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        writer.write(head + body)
        await writer.drain()
        data = await asyncio.wait_for(reader.read(), timeout=300)
        writer.close()
        line = data.split(b"\r\n", 1)[0].decode(errors="replace")
        results.append(line.split(" ")[1] if line.startswith("HTTP/1.1 ") else "garbled")
    except Exception as e:  # a refused or reset connection is an unanswered client
        results.append("unanswered:" + type(e).__name__)


async def timed_get(port, path):
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n".encode())
    await writer.drain()
    data = await asyncio.wait_for(reader.read(), timeout=300)
    writer.close()
    return data.split(b" ", 2)[1].decode(), (time.monotonic() - started) * 1000


async def storm(port, clients, pid, samples, interval):
    body = json.dumps({"model": "m0", "messages": [{"role": "user", "content": "hi"}],
                       "max_tokens": 4}).encode()
    results = []
    tasks = [asyncio.create_task(one_call(port, body, results)) for _ in range(clients)]
    peak_threads, peak_rss = 0, 0.0
    # A call that needs one of the daemon's worker threads, while every client waits.
    await asyncio.sleep(interval)
    metrics = await timed_get(port, "/metrics")
    for _ in range(samples):
        await asyncio.sleep(interval)
        t, r = proc_status(pid)
        peak_threads, peak_rss = max(peak_threads, t), max(peak_rss, r)
    started = time.monotonic()
    await asyncio.gather(*tasks)
    return results, peak_threads, peak_rss, time.monotonic() - started, metrics


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gpumod", required=True)
    ap.add_argument("--engine", required=True)
    ap.add_argument("--services", type=int, default=50)
    ap.add_argument("--clients", type=int, default=2000)
    ap.add_argument("--load-ms", type=int, default=4000)
    ap.add_argument("--idle-s", type=float, default=5)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, args.clients + 1000)), hard))

    root = tempfile.mkdtemp(prefix="gpumod-waiters-")
    write_config(os.path.join(root, "config"), os.path.abspath(args.engine), args.services, args.load_ms)
    port_file = os.path.join(root, "serve.port")
    log = open(os.path.join(root, "daemon.log"), "w")
    daemon = subprocess.Popen([args.gpumod, "serve", "--config", os.path.join(root, "config"), "--listen",
                               "127.0.0.1:0", "--port-file", port_file, "--state-dir", os.path.join(root, "state"),
                               "--stop-services-on-exit", "--log-level", "warn"], stdout=log, stderr=log)
    try:
        deadline = time.monotonic() + 30
        while not os.path.exists(port_file) or not open(port_file).read().strip():
            if time.monotonic() > deadline or daemon.poll() is not None:
                sys.exit("the daemon did not start; see " + log.name)
            time.sleep(0.05)
        port = int(open(port_file).read())
        time.sleep(args.idle_s)
        idle_threads, idle_rss = proc_status(daemon.pid)
        samples = max(1, int(args.load_ms / 1000 * 2) - 1)
        results, peak_threads, peak_rss, rest, metrics = asyncio.run(
            storm(port, args.clients, daemon.pid, samples, 0.5))
        after_threads, after_rss = proc_status(daemon.pid)
        counts = {}
        for r in results:
            counts[r] = counts.get(r, 0) + 1
        print(f"services {args.services}, clients {args.clients}, load {args.load_ms} ms")
        print(f"idle:             threads {idle_threads}, RSS {idle_rss:.1f} MiB")
        print(f"clients waiting:  threads {peak_threads} (peak), RSS {peak_rss:.1f} MiB (peak)")
        print(f"after answers:    threads {after_threads}, RSS {after_rss:.1f} MiB")
        print(f"GET /metrics while they wait: HTTP {metrics[0]} in {metrics[1]:.0f} ms")
        print(f"answers: {json.dumps(counts, sort_keys=True)} (last answer {rest:.1f} s after the sampling)")
        ok = counts.get("200", 0) == args.clients
        print("every client answered 200" if ok else "NOT every client answered 200")
        return 0 if ok else 1
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()


if __name__ == "__main__":
    sys.exit(main())
