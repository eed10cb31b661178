"""PyTorch SDPA bf16 decode baseline on the shapes of bench_decode.cu (same run, same device).
q [B, 32, 1, 128], k/v [B, 8, ctx, 128] bf16, scaled_dot_product_attention(enable_gqa=True).
Small shapes rotate over slices of a 32-sequence tensor so repeats do not hit the L2.
Writes JSON {"rows": [{"B","ctx","ms","tbps"}]} to argv[1]."""
import json
import sys

import torch
import torch.nn.functional as F

out = sys.argv[1]
quick = len(sys.argv) > 2 and sys.argv[2] == "--quick"
Bs, ctxs, reps = ([32], [32768], 10) if quick else ([1, 8, 32], [8192, 32768, 131072], 20)
H, HKV, D, BMAX = 32, 8, 128, 32
dev = "cuda"
rows = []
for ctx in ctxs:
    k = torch.randn(BMAX, HKV, ctx, D, device=dev, dtype=torch.bfloat16)
    v = torch.randn(BMAX, HKV, ctx, D, device=dev, dtype=torch.bfloat16)
    q = torch.randn(BMAX, H, 1, D, device=dev, dtype=torch.bfloat16)
    for B in Bs:
        nsets = BMAX // B
        ts = []
        for r in range(reps + 3):
            s = r % nsets
            qs, ks, vs = q[s * B:(s + 1) * B], k[s * B:(s + 1) * B], v[s * B:(s + 1) * B]
            e0 = torch.cuda.Event(enable_timing=True)
            e1 = torch.cuda.Event(enable_timing=True)
            e0.record()
            o = F.scaled_dot_product_attention(qs, ks, vs, enable_gqa=True)
            e1.record()
            torch.cuda.synchronize()
            if r >= 3:
                ts.append(e0.elapsed_time(e1))
        ts.sort()
        ms = ts[len(ts) // 2]
        nbytes = 2 * B * HKV * ctx * D * 2
        rows.append({"B": B, "ctx": ctx, "ms": ms, "tbps": nbytes / (ms * 1e-3) / 1e12})
        print(f"sdpa bf16 B={B:<2} ctx={ctx:<6} {ms:8.4f} ms  {rows[-1]['tbps']:.3f} TB/s",
              flush=True)
    del k, v, q
    torch.cuda.empty_cache()
json.dump({"torch": torch.__version__, "rows": rows}, open(out, "w"), indent=1)
