#!/usr/bin/env python3
"""Optional check of tq's forward pass against an independent engine: llama.cpp, through
llama-cpp-python, on the same GGUF. Not a project dependency: run it from a throwaway venv,

    python3 -m venv /tmp/refvenv
    /tmp/refvenv/bin/pip install gguf numpy llama-cpp-python     # builds llama.cpp from source
    /tmp/refvenv/bin/python scripts/verify_reference.py --tq build/tq > docs/runtime-verification.md
    /tmp/refvenv/bin/python scripts/verify_reference.py --tq build/tq \
        --model models/gemma-3-270m-q4_k_m.gguf --chunks 4 > docs/gemma3-verification.md

What it does (issue 3, "Done when" 1; issue 12, "Done when" 1 and 4):
  * writes an F32 copy of the model (every tensor dequantized by gguf-py, metadata copied), so
    that both engines multiply by exactly the same weights in f32 (both engines otherwise
    quantize the activations to 8 bits for their quantized dot products, each its own way);
  * logits: for each prompt, tq (`tq logits`, f32 cache) vs llama.cpp (logits_all, f32 cache) on
    the same token ids: top-1 at every position and max |Δlogit| — on the F32 copy (the forward
    pass itself) and, for information, on the model file as it is (quantized products);
  * greedy: the 32-token greedy continuation of tq (`tq generate --temp 0`, f16 cache) vs
    llama.cpp's (f16 cache, its default), on the F32 copy;
  * perplexity with an f16 cache on the default text, same chunking (non-overlapping chunks of
    -c tokens, second half scored), tq `perplexity` vs llama.cpp logits, on the model file as
    it is and on the F32 copy;
  * tokenization of the text's beginning, tq vs llama.cpp.
The BOS rule is the model's (tokenizer.ggml.add_bos_token: Gemma yes, SmolLM2 no).
--weights f32 | gguf | both (default both) picks the weights of each section: f32 = the F32
copy (logits criterion top-1 everywhere and max |Δlogit| ≤ 0.05), gguf = the file's own
quantized weights on both sides (both engines quantize the activations to 8 bits, each its own
way: criterion top-1 everywhere, max |Δlogit| stated), both = the F32 copy for the criterion and
greedy, the file for information, perplexity on both. --ppl-tol 0.005 is issue 12's 0.5 %.
llama.cpp can be its shared library built from the llama-cpp-python sdist:
PYTHONPATH=<sdist> LLAMA_CPP_LIB_PATH=<build>/bin.
Prints a Markdown report on stdout.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "In 1905, Albert Einstein published four papers that changed physics. The first",
    "Lists in Python are mutable sequences. You can append items, remove them, and",
    "import numpy as np\n\n# Compute the mean of each column of a matrix\ndef column_means(m):",
]


def log(*a):
    print(*a, file=sys.stderr, flush=True)


def make_f32_copy(src, dst):
    import gguf
    r = gguf.GGUFReader(src)
    arch = r.fields["general.architecture"].contents()
    w = gguf.GGUFWriter(dst, arch)
    for key, f in r.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        vt = gguf.GGUFValueType(f.types[0])
        val = f.contents()
        if key == "general.file_type":
            val = 0  # ALL_F32
        if vt == gguf.GGUFValueType.ARRAY:
            w.add_key_value(key, val, vt, gguf.GGUFValueType(f.types[1]))
        else:
            w.add_key_value(key, val, vt)
    for t in r.tensors:
        arr = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32)
        shape = [int(x) for x in reversed(t.shape)]  # numpy order: slowest first
        w.add_tensor(t.name, arr.reshape(shape))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def gguf_meta(path):
    import gguf
    r = gguf.GGUFReader(path)
    out = {}
    for key, f in r.fields.items():
        try:
            out[key] = f.contents()
        except Exception:
            pass
    return out


def gguf_version():
    try:
        from importlib.metadata import version
        return version("gguf")
    except Exception:
        return "?"


def log_softmax(x):
    x = x.astype(np.float64)
    m = x.max(axis=-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(axis=-1, keepdims=True))


def llama_greedy(llm, prompt, add_bos, n=32):
    """llama.cpp's greedy continuation of prompt: up to n token ids, stopping at end of text."""
    import llama_cpp
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    llm.reset()
    llm.eval(llm.tokenize(prompt.encode(), add_bos=add_bos, special=True))
    gen = []
    for _ in range(n):
        tok = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(vocab, tok):
            break
        gen.append(tok)
        llm.eval([tok])
    return gen


def main():
    ap = argparse.ArgumentParser()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap.add_argument("--tq", default=os.path.join(root, "build", "tq"))
    ap.add_argument("--model",
                    default=os.path.join(root, "models", "SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--text", default=os.path.join(root, "data", "eval.txt"))
    ap.add_argument("--ctx", type=int, default=512)
    ap.add_argument("--chunks", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--workdir", default=tempfile.gettempdir())
    ap.add_argument("--weights", choices=["f32", "gguf", "both"], default="both")
    ap.add_argument("--ppl-tol", type=float, default=0.005)
    ap.add_argument("--noise-floor", action="store_true",
                    help="also measure each engine against itself on the file's quantized "
                         "weights: llama.cpp with and without its weight repacking, tq at its "
                         "scalar and best SIMD level (section 4)")
    a = ap.parse_args()

    import llama_cpp
    from llama_cpp import Llama

    base = os.path.splitext(os.path.basename(a.model))[0]
    f32 = os.path.join(a.workdir, f"tq-verify-{base}-f32.gguf")
    if a.weights == "gguf":
        f32 = a.model  # no F32 copy: every section on the file's own weights
    elif not os.path.exists(f32):
        log("writing the F32 copy", f32)
        make_f32_copy(a.model, f32 + ".part")
        os.replace(f32 + ".part", f32)
    env = dict(os.environ, TQ_MODEL=a.model, TQ_TEXT=a.text)
    T = ["-t", str(a.threads)]

    def tq(model, *args, extra_env=None):
        r = subprocess.run([a.tq, *args, "-m", model, *T], capture_output=True, text=True,
                           env=dict(env, **(extra_env or {})))
        if r.returncode != 0:
            sys.exit("tq failed: " + r.stderr)
        return r.stdout

    n_ctx_llm = max(1024, a.ctx)
    F32 = 0  # GGML_TYPE_F32
    # The model's own BOS rule (Gemma wants one, SmolLM2 does not); tq applies the same rule.
    meta = gguf_meta(a.model)
    add_bos = bool(meta.get("tokenizer.ggml.add_bos_token", False))
    out = ["# Runtime verification against llama.cpp", ""]
    out.append(f"- model `{os.path.basename(a.model)}` ({meta.get('general.architecture')}); "
               f"reference: llama.cpp via llama-cpp-python {llama_cpp.__version__}; F32 copy: "
               f"weights dequantized by gguf-py {gguf_version()}; tq `{a.tq}`; "
               f"{a.threads} thread(s); BOS {'yes' if add_bos else 'no'}")
    out.append(f"- date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")
    out.append("")
    text = open(a.text, encoding="utf-8").read()
    prompts = PROMPTS + [text[:1500]]  # plus the text's first 1500 characters, a longer context

    # 1. Logits on the same token ids, f32 caches on both sides.
    def logits_table(model, title, strict, max_tol=True):
        llm = Llama(model_path=model, n_ctx=n_ctx_llm, n_batch=n_ctx_llm, n_ubatch=n_ctx_llm,
                    logits_all=True, n_threads=a.threads, type_k=F32, type_v=F32,
                    flash_attn=False, verbose=False)
        rows = [f"## Logits: {title} (f32 KV cache on both sides, same token ids)", "",
                "| prompt | tokens | same tokenization | top-1 agree | max abs dlogit "
                "| mean abs dlogit |",
                "|---|---:|:---:|---:|---:|---:|"]
        ok_all, worst, ties = True, 0.0, []
        for p in prompts:
            with tempfile.NamedTemporaryFile(suffix=".f32", dir=a.workdir, delete=False) as fh:
                path = fh.name
            j = json.loads(tq(model, "logits", "-p", p, "--out", path, "-ctk", "f32",
                              "-ctv", "f32"))
            ids, V = j["tokens"], j["n_vocab"]
            mine = np.fromfile(path, dtype=np.float32).reshape(len(ids), V)
            os.unlink(path)
            theirs_ids = llm.tokenize(p.encode(), add_bos=add_bos, special=True)
            llm.reset()
            llm.eval(ids)
            ref = np.array(llm.scores[: len(ids)], dtype=np.float32)
            d = np.abs(mine - ref)
            agree = (mine.argmax(1) == ref.argmax(1)).mean()
            worst = max(worst, float(d.max()))
            ok_all &= agree == 1.0 and (d.max() <= 0.05 or not max_tol)
            rows.append(f"| {json.dumps(p)[:48]} | {len(ids)} "
                        f"| {'yes' if theirs_ids == ids else 'NO'} "
                        f"| {100 * agree:.1f}% | {d.max():.4f} | {d.mean():.5f} |")
            # Where top-1 differs: how far apart the two tokens are in each engine (a gap
            # below max |Δlogit| is a tie within float rounding).
            for i in np.nonzero(mine.argmax(1) != ref.argmax(1))[0]:
                x, y = int(mine[i].argmax()), int(ref[i].argmax())
                ties.append(f"- prompt {json.dumps(p)[:24]}, position {i}: tq's top-1 "
                            f"{json.dumps(llm.detokenize([x]).decode(errors='replace'))} leads "
                            f"llama.cpp's {json.dumps(llm.detokenize([y]).decode(errors='replace'))}"
                            f" by {mine[i, x] - mine[i, y]:.4f} in tq; llama.cpp has it "
                            f"{ref[i, y] - ref[i, x]:.4f} the other way")
        if ties:
            rows += ["", "Top-1 differences:"] + ties
        if strict:
            crit = "top-1 equal everywhere" + (", max |Δlogit| ≤ 0.05" if max_tol else "")
            rows += ["", f"Criterion ({crit}): "
                     f"**{'pass' if ok_all else 'FAIL'}** (max |Δlogit| {worst:.4f})", ""]
        else:
            rows += ["", "For information: each engine quantizes the activations to 8 bits its "
                     "own way for the quantized weights, so these differ by more than the "
                     f"F32 rows (max |Δlogit| {worst:.4f}).", ""]
        return rows

    if a.weights != "gguf":
        out += logits_table(f32, "F32 copy (the forward pass)", True)
    if a.weights != "f32":
        out += logits_table(a.model, "the model file as it is (quantized products)",
                            a.weights == "gguf", max_tol=False)

    # 2. Greedy continuations, f16 caches (llama.cpp's default), on the F32 copy.
    llm = Llama(model_path=f32, n_ctx=n_ctx_llm, n_batch=n_ctx_llm, n_ubatch=n_ctx_llm,
                logits_all=True, n_threads=a.threads, flash_attn=False, verbose=False)
    out += [f"## Greedy 32-token continuations ({'the file' if a.weights == 'gguf' else 'F32 copy'}"
            ", f16 KV cache on both sides)", "",
            "| prompt | identical | tq continuation |", "|---|:---:|---|"]
    n_same = 0
    for p in PROMPTS:
        j = json.loads(tq(f32, "generate", "-p", p, "-n", "32", "--temp", "0", "--json"))
        gen = llama_greedy(llm, p, add_bos)
        same = gen == j["tokens"]
        n_same += same
        out.append(f"| {json.dumps(p)[:40]} | {'yes' if same else 'NO'} "
                   f"| {json.dumps(j['text'])[:90]} |")
        if not same:
            theirs = llm.detokenize(gen).decode(errors="replace")
            out.append(f"|  | llama.cpp: | {json.dumps(theirs)[:90]} |")
    out += ["", f"Identical: **{n_same}/{len(PROMPTS)}**", ""]

    # 3. Perplexity, f16 cache, same chunking: the model file as it is, then the F32 copy.
    toks = llm.tokenize(text.encode(), add_bos=add_bos, special=True)
    head = text[:4000]
    j = json.loads(tq(a.model, "logits", "-p", head, "--out", os.devnull))
    tok_same = j["tokens"] == llm.tokenize(head.encode(), add_bos=add_bos, special=True)
    del llm
    n_chunks = min(a.chunks, len(toks) // a.ctx)
    first = a.ctx // 2
    out += [f"## Perplexity, f16 KV cache, `{os.path.basename(a.text)}`, -c {a.ctx}, "
            f"{n_chunks} chunks", "",
            "| weights | tq PPL | llama.cpp PPL | difference | scored tokens (tq / llama.cpp) |",
            "|---|---:|---:|---:|---:|"]
    verdicts = []
    runs = {"f32": [("F32 copy", f32)], "gguf": [("model file as it is", a.model)],
            "both": [("model file as it is", a.model), ("F32 copy", f32)]}[a.weights]
    for label, model in runs:
        nll = []
        llm_p = Llama(model_path=model, n_ctx=a.ctx, n_batch=a.ctx, n_ubatch=a.ctx,
                      logits_all=True, n_threads=a.threads, flash_attn=False, verbose=False)
        for c in range(n_chunks):
            chunk = toks[c * a.ctx:(c + 1) * a.ctx]
            if add_bos:  # as llama.cpp's perplexity (and tq): every chunk starts with BOS
                chunk = [llm_p.token_bos()] + chunk[1:]
            llm_p.reset()
            llm_p.eval(chunk)
            lp = log_softmax(np.array(llm_p.scores[first:a.ctx - 1], dtype=np.float32))
            nll += [-lp[i, chunk[first + i + 1]] for i in range(a.ctx - 1 - first)]
            log(f"llama.cpp {label} chunk {c + 1}/{n_chunks}")
        del llm_p
        ppl_ref = float(np.exp(np.mean(nll)))
        jt = json.loads(tq(model, "perplexity", "-c", str(a.ctx), "--chunks", str(n_chunks),
                           "--json", "-q"))
        rel = (jt["ppl"] - ppl_ref) / ppl_ref
        verdicts.append(abs(rel) <= a.ppl_tol)
        out.append(f"| {label} | {jt['ppl']:.4f} | {ppl_ref:.4f} | {100 * rel:+.3f}% "
                   f"| {jt['tokens']} / {len(nll)} |")
    out += ["", f"Criterion (within {100 * a.ppl_tol:g}%): "
            f"**{'pass' if all(verdicts) else 'FAIL'}**. "
            "Tokenization of the text's first 4000 characters identical: "
            f"**{'yes' if tok_same else 'NO'}**; text tokens: llama.cpp {len(toks)}.", ""]
    if a.noise_floor:
        out += noise_floor(a, prompts, add_bos, tq, n_ctx_llm)
    print("\n".join(out))


def noise_floor(a, prompts, add_bos, tq, n_ctx_llm):
    """Section 4: how far each engine is from itself on the file's quantized weights.

    llama.cpp has two shipped CPU paths for the same file: by default it repacks Q4_K/Q6_K
    weights into interleaved layouts with their own GEMV/GEMM kernels (`use_extra_bufts`), and
    with repacking off it runs its plain vec_dot kernels. tq has a scalar reference and SIMD
    kernels (TQ_SIMD). Both sides quantize activations to int8 per block, so a 1-ulp change of an
    activation can flip one rounding step; the table shows how large that effect is between two
    correct paths of one engine, beside the cross-engine figures."""
    import llama_cpp.llama_cpp as ll
    from llama_cpp import Llama
    F32 = 0
    default_params = ll.llama_model_default_params

    def llama(repack, **kw):
        def params():
            p = default_params()
            p.use_extra_bufts = repack
            return p
        ll.llama_model_default_params = params
        try:
            return Llama(model_path=a.model, n_ctx=n_ctx_llm, n_batch=n_ctx_llm,
                         n_ubatch=n_ctx_llm, logits_all=True, n_threads=a.threads,
                         flash_attn=False, verbose=False, **kw)
        finally:
            ll.llama_model_default_params = default_params

    def tq_logits(level, p):
        with tempfile.NamedTemporaryFile(suffix=".f32", dir=a.workdir, delete=False) as fh:
            path = fh.name
        # "" = the tool's own choice (the best level this CPU has).
        j = json.loads(tq(a.model, "logits", "-p", p, "--out", path, "-ctk", "f32", "-ctv",
                          "f32", extra_env={"TQ_SIMD": level}))
        x = np.fromfile(path, dtype=np.float32).reshape(len(j["tokens"]), j["n_vocab"])
        os.unlink(path)
        return j["tokens"], x

    # Logits of every prompt from each path, f32 caches, the same token ids.
    # tq at its own level first: its token ids are the ones every path is given.
    paths = {}
    ids_of, tq_best = zip(*(tq_logits("", p) for p in prompts))
    for repack in (True, False):
        name = "llama.cpp " + ("repacked (default)" if repack else "not repacked")
        llm = llama(repack, type_k=F32, type_v=F32)
        paths[name] = []
        for ids in ids_of:
            llm.reset()
            llm.eval(ids)
            paths[name].append(np.array(llm.scores[: len(ids)], dtype=np.float32))
        del llm
        log("noise floor:", name)
    paths["tq best SIMD level"] = list(tq_best)
    for level in ("avx2", "scalar"):
        paths[f"tq {level}"] = [tq_logits(level, p)[1] for p in prompts]
        log("noise floor: tq", level)
    n_pos = sum(len(i) for i in ids_of)
    names = list(paths)
    rows = ["## Noise floor: each engine against itself (the file's quantized weights)", "",
            noise_floor.__doc__.split("\n\n")[1].replace("\n    ", " "), "",
            f"{len(prompts)} prompts, {n_pos} positions, f32 KV cache, {a.threads} thread(s).", "",
            "| path A | path B | top-1 agree | max abs dlogit | mean abs dlogit |",
            "|---|---|---:|---:|---:|"]
    for i, x in enumerate(names):
        for y in names[i + 1:]:
            agree = sum(int((u.argmax(1) == v.argmax(1)).sum())
                        for u, v in zip(paths[x], paths[y]))
            dmax = max(float(np.abs(u - v).max()) for u, v in zip(paths[x], paths[y]))
            dmean = float(np.mean(np.concatenate([np.abs(u - v).ravel()
                                                  for u, v in zip(paths[x], paths[y])])))
            rows.append(f"| {x} | {y} | {agree}/{n_pos} | {dmax:.4f} | {dmean:.4f} |")

    # Greedy continuations of llama.cpp's two paths (f16 cache, its default) beside tq's.
    gens = {}
    for repack in (True, False):
        llm = llama(repack)
        gens["llama.cpp " + ("repacked" if repack else "not repacked")] = [
            llama_greedy(llm, p, add_bos) for p in PROMPTS]
        del llm
    gens["tq"] = [json.loads(tq(a.model, "generate", "-p", p, "-n", "32", "--temp", "0",
                                "--json"))["tokens"] for p in PROMPTS]
    rows += ["", "Greedy 32-token continuations (f16 KV cache), identical prompts of "
             f"{len(PROMPTS)}:", "", "| path A | path B | identical |", "|---|---|---:|"]
    gn = list(gens)
    for i, x in enumerate(gn):
        for y in gn[i + 1:]:
            same = sum(u == v for u, v in zip(gens[x], gens[y]))
            rows.append(f"| {x} | {y} | {same}/{len(PROMPTS)} |")
    rows.append("")
    return rows


if __name__ == "__main__":
    main()
