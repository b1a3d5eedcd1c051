"""SGLang expert-distribution dumps (torch.save zip files) for plan-experts, and broken or hostile ones.

SGLang's recorder in `stat` mode (sglang 0.5.23, sglang/srt/eplb/expert_distribution.py,
`_StatAccumulator.dump`) builds

    dict(rank=<int>, logical_count=<int32 tensor [buffer passes, num_hidden_layers, experts]>,
         average_utilization_rate_over_window=<float or None>)

and `_dump_to_file` writes it with `torch.save(data, path)` as `expert_distribution_recorder_<time.time()>.pt`.
This script builds the same dict with the same dtypes and calls torch.save the same way; SGLang itself
(and a GPU) are not needed. The loads are those of profiles/tiny_dsv3.sglang.json (the tiny DeepSeek-V3
model: 3 decoder layers, layer 0 dense (first_k_dense_replace=1), 16 experts), so a plan from the dumps
can be compared with a plan from profiles/tiny_dsv3.json.

usage: /work/venv/bin/python Fixtures/sglang_dumps.py     (torch; the `zstd` CLI)
Writes Fixtures/profiles/sglang/ (deleted first). Deterministic: a rerun writes the same bytes, except
the 40-byte `.data/serialization_id` member torch.save draws at random (not read by anyone), fixed here
after writing so reruns are byte-identical.
"""
import gzip
import io
import json
import os
import shutil
import subprocess
import zipfile

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "profiles", "sglang")
MARKER = "/tmp/moetool-malicious-pickle-ran"


def passes():
    """[pass][MoE layer][expert] from tiny_dsv3.sglang.json."""
    with open(os.path.join(HERE, "profiles", "tiny_dsv3.sglang.json")) as f:
        return json.load(f)["logical_count"]


def with_dense_first(moe_passes):
    """[pass][num_hidden_layers][expert]: decoder layer 0 is dense (never recorded: all zero), as in SGLang."""
    experts = len(moe_passes[0][0])
    return [[[0] * experts] + p for p in moe_passes]


def fix_serialization_id(path):
    """torch.save writes a random `.data/serialization_id`; rewrite it as zeros (same length), in place."""
    data = bytearray(open(path, "rb").read())
    with zipfile.ZipFile(path) as z:
        info = next(i for i in z.infolist() if i.filename.endswith(".data/serialization_id"))
        old = z.read(info)
    start = data.find(old)
    assert start > 0 and data.count(old) == 1
    new = b"0" * len(old)
    data[start:start + len(old)] = new
    # The CRC-32 in the local header and the central directory must follow the new bytes.
    import binascii
    old_crc = binascii.crc32(old).to_bytes(4, "little")
    new_crc = binascii.crc32(new).to_bytes(4, "little")
    assert data.count(old_crc) == 2
    data = data.replace(old_crc, new_crc)
    open(path, "wb").write(bytes(data))
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None


def save(obj, name):
    path = os.path.join(OUT, name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    torch.save(obj, path)
    fix_serialization_id(path)
    return path


def dump(rank, counts, utilization=None):
    """What `_StatAccumulator.dump` hands torch.save."""
    return dict(rank=rank, logical_count=torch.tensor(counts, dtype=torch.int32),
                average_utilization_rate_over_window=utilization)


class Malicious:
    """A pickle that runs a shell command when unpickled by pickle.load (or torch.load(weights_only=False))."""
    def __reduce__(self):
        return (os.system, (f"touch {MARKER}",))


def rezip(src, dst, change):
    """Copies a torch zip member by member (stored, as torch writes them), `change(name, bytes)` deciding each."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", zipfile.ZIP_STORED) as zout:
        for info in zin.infolist():
            data = change(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(zipfile.ZipInfo(info.filename, date_time=(1980, 1, 1, 0, 0, 0)), data)


def main():
    shutil.rmtree(OUT, ignore_errors=True)
    os.makedirs(OUT)
    p = passes()  # 3 passes x 2 MoE layers x 16 experts

    # One dump: 3 buffered passes, rank 0, no utilization rate (SGLang's default threshold 1.0 gives None).
    single = save(dump(0, with_dense_first(p)), "single/expert_distribution_recorder_1764756000.25.pt")

    # Two successive dumps (two windows): the first the passes above, the second with the load moved
    # to other experts (each expert's counts rolled by 5), and a utilization rate as SGLang's float.
    later = [[row[5:] + row[:5] for row in layer] for layer in p]
    save(dump(0, with_dense_first(p), 0.8125), "windows/expert_distribution_recorder_1764756600.5.pt")
    save(dump(0, with_dense_first(later), 0.625), "windows/expert_distribution_recorder_1764757200.75.pt")

    # Two ranks' partial counts (what each rank's dict holds before the all_reduce): pass 0 from rank 0,
    # passes 1 and 2 from rank 1; summed they are the single dump.
    save(dump(0, with_dense_first(p[:1]) + [[[0] * 16] * 3] * 2), "ranks/expert_distribution_recorder_1764756000.25_0.pt")
    save(dump(1, [[[0] * 16] * 3] + with_dense_first(p[1:])), "ranks/expert_distribution_recorder_1764756000.25_1.pt")

    # zstd-compressed (recognised by content, then read as a torch file).
    subprocess.run(["zstd", "-q", "-19", "-f", single, "-o", os.path.join(OUT, "single.pt.zst")], check=True)

    # Refused files.
    bad = os.path.join(OUT, "refused")
    os.makedirs(bad)
    if os.path.exists(MARKER):
        os.remove(MARKER)
    save({"rank": 0, "logical_count": Malicious()}, "refused/malicious.pt")
    assert not os.path.exists(MARKER), "saving must not run the command"
    import datetime
    save({"rank": 0, "logical_count": torch.zeros(1, 3, 16, dtype=torch.int32), "when": datetime.date(2026, 1, 1)},
         "refused/unknown_global.pt")
    blob = open(single, "rb").read()
    open(os.path.join(bad, "truncated.pt"), "wb").write(blob[: len(blob) // 2])
    rezip(single, os.path.join(bad, "storage_short.pt"),
          lambda name, data: data[:-8] if name.endswith("/data/0") else data)

    # A size that needs more elements than the storage holds: (3, 3, 16) -> (3, 9, 16) in data.pkl.
    def bigger(name, data):
        if name.endswith("data.pkl"):
            shape = b"K\x03K\x03K\x10\x87"
            assert data.count(shape) == 1
            return data.replace(shape, b"K\x03K\x09K\x10\x87")
        return data
    rezip(single, os.path.join(bad, "size_past_storage.pt"), bigger)
    # torch's format before 1.6 (a pickle stream, no zip); no tensor in it, whose storage keys would be addresses.
    torch.save({"rank": 0, "logical_count": [[0] * 16] * 3}, os.path.join(bad, "legacy.pt"), _use_new_zipfile_serialization=False)
    # SGLang's per_pass mode (`_DetailAccumulator.dump`): records of physical counts, one file per rank.
    save(dict(records=[dict(forward_pass_id=0, rank=0, gatherer_key="primary",
                            global_physical_count=torch.zeros(3, 16, dtype=torch.int32))],
              last_physical_to_logical_map=torch.arange(16).repeat(3, 1)),
         "refused/expert_distribution_recorder_1764756000.25_0.pt")
    with open(os.path.join(HERE, "profiles", "tiny_dsv3.json"), "rb") as f:
        gz = io.BytesIO()
        with gzip.GzipFile(fileobj=gz, mode="wb", mtime=0) as g:
            g.write(f.read())
    open(os.path.join(bad, "tiny_dsv3.json.gz"), "wb").write(gz.getvalue())
    open(os.path.join(bad, "login.html"), "w").write("<!DOCTYPE html>\n<html><head><title>Sign in</title></head></html>\n")

    # The reader must agree with torch on every accepted file, and torch must refuse what moetool refuses.
    for root, _, files in os.walk(OUT):
        for name in files:
            path = os.path.join(root, name)
            if name.endswith(".pt") and "refused" not in root:
                d = torch.load(path, weights_only=True)
                assert d["logical_count"].dtype == torch.int32 and d["logical_count"].shape[1:] == (3, 16)
    for name in ["malicious.pt", "unknown_global.pt"]:
        try:
            torch.load(os.path.join(bad, name), weights_only=True)
            raise AssertionError(f"torch accepted {name}")
        except Exception as e:  # weights_only refuses the global
            assert "weights_only" in str(e) or "Unsupported global" in str(e), e
    assert not os.path.exists(MARKER)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
