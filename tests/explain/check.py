"""Checks an explanation folder written by `volley-runs explain` (stdlib only).

    python3 tests/explain/check.py DIR --kind vector|image [--transitions FILE]

Prints one line per check and exits non-zero on the first failure.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

passed = 0


def check(what, ok, detail=""):
    global passed
    if not ok:
        print(f"explain check: FAIL: {what} {detail}", file=sys.stderr)
        sys.exit(1)
    passed += 1
    print(f"explain check: ok: {what}")


def ffprobe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-select_streams", "v:0",
         "-show_entries", "stream=nb_read_frames,width,height,codec_name", "-of", "json", path],
        check=True, capture_output=True, text=True).stdout
    return json.loads(out)["streams"][0]


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    return header, data


def main():
    p = argparse.ArgumentParser()
    p.add_argument("dir")
    p.add_argument("--kind", choices=["vector", "image"], required=True)
    p.add_argument("--transitions")
    a = p.parse_args()
    d = a.dir
    s = json.load(open(os.path.join(d, "summary.json")))
    check(f"{d}: summary names the run and checkpoint", bool(s.get("run_id")) and bool(s.get("checkpoint")), s.get("run_id"))
    length = s["watched"]["length"]
    check("the watched episode is the first one played", length == s["lengths"][0], (length, s["lengths"][0]))
    lines = [json.loads(l) for l in open(os.path.join(d, "steps.jsonl"))]
    check(f"steps.jsonl has one line per step ({length})", len(lines) == length, len(lines))
    check("steps are numbered 0..length-1", [l["step"] for l in lines] == list(range(length)))
    figures = s["explanation"]["figures"]
    want_figures = min(length, 100)
    check(f"{want_figures} per-step figures", figures == want_figures, figures)
    if a.kind == "vector":
        for l in lines:
            total = sum(l["importance"].values())
            if abs(total - 1.0) > 1e-4 and total != 0.0:
                check("each step's importances sum to 1", False, (l["step"], total))
            if l["top"] != max(l["importance"], key=l["importance"].get):
                check("top is the most important feature", False, l)
        check("each step's importances sum to 1 and name the top one", True)
        steps = sorted(os.listdir(os.path.join(d, "steps")))
        check("a PNG per figure in steps/", len(steps) == want_figures and all(f.endswith(".png") for f in steps), len(steps))
        mean = s["importance_mean"]
        check("the mean importance over every episode sums to 1", abs(sum(mean.values()) - 1.0) < 1e-4, sum(mean.values()))
        check("importance.png is drawn", os.path.getsize(os.path.join(d, "importance.png")) > 10_000)
    else:
        for l in lines:
            sal = l["saliency"]
            if not (sal["policy_max"] >= 0 and len(sal["policy_peak"]) == 2):
                check("each step has a saliency peak", False, l)
        check("each step has its saliency maximum and peak", True)
        frames = sorted(os.listdir(os.path.join(d, "saliency")))
        check("a saliency PNG per figure", len(frames) == want_figures, len(frames))
    v = s["video"]
    info = ffprobe(v["path"])
    check("the video is H.264", info["codec_name"] == "h264", info)
    check(f"the video has one frame per step ({length})", int(info["nb_read_frames"]) == length, info)
    w, h = v["width"] + v["width"] % 2, v["height"] + v["height"] % 2
    check(f"the video is {w}x{h}", (info["width"], info["height"]) == (w, h), info)
    if a.transitions:
        header, data = safetensors_header(a.transitions)
        meta = header.pop("__metadata__")
        check("the transitions declare their format", meta["format"] == "volley-transitions/1", meta)
        t = sum(s["lengths"])
        for name in ["obs", "next_obs", "actions", "rewards", "terminated", "truncated", "episode", "step"]:
            check(f"transitions field {name} has {t} rows", header[name]["shape"][0] == t, header[name])
        lo, hi = header["rewards"]["data_offsets"]
        rewards = struct.unpack(f"<{t}f", data[lo:hi])
        lo, hi = header["episode"]["data_offsets"]
        episode = struct.unpack(f"<{t}q", data[lo:hi])
        for e, want in enumerate(s["returns"]):
            got = sum(r for r, k in zip(rewards, episode) if k == e)
            if abs(got - want) > 1e-3 * max(1.0, abs(want)):
                check(f"episode {e}'s rewards sum to its return", False, (got, want))
        check("every episode's rewards sum to its return", True)
    print(f"explain check: {passed} passed, 0 failed")


main()
