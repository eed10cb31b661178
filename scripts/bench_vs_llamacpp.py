#!/usr/bin/env python3
"""Speed of tq beside llama.cpp on the same model, text and thread count (DESIGN.md §8).

llama.cpp is measured through its own shared library (built from the llama-cpp-python sdist
outside the repository, for measuring only) driven by the sdist's Python bindings, in a child
process of this script, so both engines get the same token ids and are timed the same way:
wall time and process CPU time around the prefill and around every decoded token.

    python3 -m venv /tmp/refvenv && /tmp/refvenv/bin/pip install numpy typing-extensions \
        diskcache jinja2
    PYTHONPATH=/tmp/llamacpp/llama_cpp_python-0.3.36 LLAMA_CPP_LIB_PATH=/tmp/llamacpp/build/bin \
      /tmp/refvenv/bin/python scripts/bench_vs_llamacpp.py --model models/X.gguf \
      --rows prefill512:f16,decode2048:f16

Rows (comma-separated KIND:TYPE, TYPE = f16 | q8_0 | q4_0, ours f16 | turbo4 | turbo3 paired as
f16/f16, q8_0/turbo4, q4_0/turbo3 unless given as LLAMA/TQ, e.g. q8_0/turbo3):
  prefillN  prefill tok/s of an N-token prompt; --reps runs, engines alternating, medians.
  decodeN   decode tok/s at N tokens of context: each engine prefills the N-token prompt ONCE
            (with --prefill-threads) and then decodes --reps segments of --seg tokens; the
            median segment is reported (decode threads = --threads).
Prints a Markdown table (wall and CPU tok/s, ratio tq / llama.cpp) and writes --json.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

LLAMA_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 8}
PAIR = {"f16": ("f16", "f16"), "q8_0": ("q8_0", "turbo4"), "q4_0": ("q4_0", "turbo3")}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def llama_worker(a):
    """Child process: load, prefill the ids, decode greedily; JSON timings on stdout."""
    import ctypes
    import numpy as np
    import llama_cpp
    from llama_cpp import Llama
    ids = json.load(open(a.worker))
    t = LLAMA_TYPES[a.ltype]
    llm = Llama(model_path=a.model, n_ctx=len(ids) + a.n_decode + 16, n_batch=512, n_ubatch=512,
                n_threads=a.threads, n_threads_batch=a.prefill_threads or a.threads,
                type_k=t, type_v=t, flash_attn=True, logits_all=False, verbose=False)
    nv = llm.n_vocab()
    t0, c0 = time.perf_counter(), time.process_time()
    llm.eval(ids)
    pf_s, pf_cpu = time.perf_counter() - t0, time.process_time() - c0
    tok_s, tok_cpu = [], []
    for _ in range(a.n_decode):
        p = llm._ctx.get_logits_ith(-1)
        logits = np.ctypeslib.as_array(ctypes.cast(p, ctypes.POINTER(ctypes.c_float)), shape=(nv,))
        tok = int(np.argmax(logits))
        t1, c1 = time.perf_counter(), time.process_time()
        llm.eval([tok])
        tok_s.append(time.perf_counter() - t1)
        tok_cpu.append(time.process_time() - c1)
    print(json.dumps({"engine": "llama.cpp " + llama_cpp.__version__, "prompt_tokens": len(ids),
                      "prefill_s": pf_s, "prefill_cpu_s": pf_cpu, "decode_token_s": tok_s,
                      "decode_token_cpu_s": tok_cpu}))


def run_llama(a, ids_path, ltype, n_decode, threads, prefill_threads):
    cmd = [sys.executable, os.path.abspath(__file__), "--model", a.model, "--worker", ids_path,
           "--ltype", ltype, "--n-decode", str(n_decode), "--threads", str(threads),
           "--prefill-threads", str(prefill_threads)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("llama.cpp worker failed: " + r.stderr[-2000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_tq(a, text_path, ctype, n_decode, threads, prefill_threads, ctx):
    cmd = [a.tq, "generate", "-m", a.model, "-f", text_path, "-n", str(n_decode + 1), "--json",
           "-t", str(threads), "--prefill-threads", str(prefill_threads), "-ctk", ctype, "-ctv",
           ctype, "-c", str(ctx), "--temp", "0"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit("tq failed: " + r.stderr[-2000:])
    j = json.loads(r.stdout)
    return {"engine": "tq", "prompt_tokens": j["prompt_tokens"], "prefill_s": j["prefill_s"],
            "prefill_cpu_s": j["prefill_cpu_s"], "decode_token_s": j["decode_token_s"],
            "decode_token_cpu_s": j["decode_token_cpu_s"]}


def segments(r, seg, reps):
    """Median over `reps` segments of `seg` decoded tokens: (wall tok/s, CPU tok/s)."""
    w, c = r["decode_token_s"], r["decode_token_cpu_s"]
    if len(w) < seg * reps:
        seg = max(1, len(w) // reps)
    ws = [seg / sum(w[i * seg:(i + 1) * seg]) for i in range(reps)]
    cs = [seg / max(1e-9, sum(c[i * seg:(i + 1) * seg])) for i in range(reps)]
    return statistics.median(ws), statistics.median(cs)


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--model", required=True)
    ap.add_argument("--tq", default=os.path.join(root, "build", "tq"))
    ap.add_argument("--text", default=os.path.join(root, "data", "eval.txt"))
    ap.add_argument("--rows", default="prefill512:f16,decode2048:f16")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--prefill-threads", type=int, default=0,
                    help="threads of the one prefill of decodeN rows (default: --threads)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seg", type=int, default=16)
    ap.add_argument("--parallel", action="store_true",
                    help="decodeN rows: run the two engines at the same time (one thread each) "
                    "instead of one after the other, for the long prefills")
    ap.add_argument("--json", default="")
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    # worker mode (internal)
    ap.add_argument("--worker", default="")
    ap.add_argument("--ltype", default="f16")
    ap.add_argument("--n-decode", type=int, default=0)
    a = ap.parse_args()
    if a.worker:
        return llama_worker(a)

    from llama_cpp import Llama
    import llama_cpp
    vocab = Llama(model_path=a.model, n_ctx=16, vocab_only=True, verbose=False)
    text = open(a.text, encoding="utf-8").read()
    all_ids = vocab.tokenize(text.encode(), add_bos=False, special=False)
    pt = a.prefill_threads or a.threads
    results, table = [], []
    for row in a.rows.split(","):
        kind, types = row.split(":")
        lt, tt = types.split("/") if "/" in types else PAIR[types]
        n = int(kind.lstrip("prefilldecode"))
        if n > len(all_ids):
            sys.exit(f"the text has only {len(all_ids)} tokens, row {row} needs {n}")
        ids = all_ids[:n]
        base = os.path.join(a.workdir, f"tqbench_{os.getpid()}_{n}")
        json.dump(ids, open(base + ".ids", "w"))
        with open(base + ".txt", "wb") as f:  # the same tokens as text for tq
            f.write(vocab.detokenize(ids))
        if kind.startswith("prefill"):
            runs = {"tq": [], "llama": []}
            for rep in range(a.reps):  # alternating
                log(f"{row}: rep {rep + 1}/{a.reps} tq")
                runs["tq"].append(run_tq(a, base + ".txt", tt, 0, a.threads, a.threads, n + 8))
                log(f"{row}: rep {rep + 1}/{a.reps} llama.cpp")
                runs["llama"].append(run_llama(a, base + ".ids", lt, 0, a.threads, a.threads))
            m = {}
            for e, rs in runs.items():
                m[e] = (statistics.median(r["prompt_tokens"] / r["prefill_s"] for r in rs),
                        statistics.median(r["prompt_tokens"] / r["prefill_cpu_s"] for r in rs))
            note = f"median of {a.reps} alternating runs, {a.threads} thread(s)"
        else:
            nd = a.seg * a.reps
            if a.parallel:
                import concurrent.futures as cf
                log(f"{row}: tq and llama.cpp at the same time: prefill {n} + decode {nd}")
                with cf.ThreadPoolExecutor(2) as ex:
                    ft = ex.submit(run_tq, a, base + ".txt", tt, nd, a.threads, pt, n + nd + 8)
                    fl = ex.submit(run_llama, a, base + ".ids", lt, nd, a.threads, pt)
                    rt, rl = ft.result(), fl.result()
            else:
                log(f"{row}: tq prefill {n} + decode {nd}")
                rt = run_tq(a, base + ".txt", tt, nd, a.threads, pt, n + nd + 8)
                log(f"{row}: llama.cpp prefill {n} + decode {nd}")
                rl = run_llama(a, base + ".ids", lt, nd, a.threads, pt)
            runs = {"tq": [rt], "llama": [rl]}
            m = {"tq": segments(rt, a.seg, a.reps), "llama": segments(rl, a.seg, a.reps)}
            note = (f"one prefill ({pt} thread(s)) per engine, median of {a.reps} decode "
                    f"segments of {a.seg} tokens, {a.threads} thread(s)"
                    + ("; both engines ran at the same time" if a.parallel else ""))
        tq_tokens = runs["tq"][0]["prompt_tokens"]
        results.append({"row": row, "llama_type": lt, "tq_type": tt, "tokens": n,
                        "tq_prompt_tokens": tq_tokens, "tq": m["tq"], "llama": m["llama"],
                        "note": note, "raw": runs})
        table.append(f"| {kind} | {n} ({tq_tokens}) | {lt} / {tt} | {m['llama'][0]:.2f} "
                     f"({m['llama'][1]:.2f}) | {m['tq'][0]:.2f} ({m['tq'][1]:.2f}) | "
                     f"{m['tq'][0] / m['llama'][0]:.2f} ({m['tq'][1] / m['llama'][1]:.2f}) | "
                     f"{note} |")
        log(table[-1])
        for s in (".ids", ".txt"):
            os.unlink(base + s)
    out = [f"Model `{os.path.basename(a.model)}`, llama.cpp {llama_cpp.__version__} (flash "
           f"attention on, n_batch = n_ubatch = 512), tq `{a.tq}`; date "
           f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; load average "
           f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine).", "",
           "| row | tokens (tq's) | KV llama.cpp / tq | llama.cpp tok/s wall (CPU) "
           "| tq tok/s wall (CPU) | tq / llama.cpp wall (CPU) | how |",
           "|---|---:|---|---:|---:|---:|---|"] + table
    print("\n".join(out))
    if a.json:
        json.dump(results, open(a.json, "w"), indent=1)


if __name__ == "__main__":
    main()
