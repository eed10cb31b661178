"""The original description's API on the default GGUF model and calibration text.

    build/venv/bin/python examples/python/pipeline_gguf.py   # a few minutes: k-means of 90 heads
"""
import turboquant as tq
from turboquant import (PolarQuantConfig, TurboQuantConfig, TurboQuantPipeline,
                        load_calibration_samples)

model = tq.Model("models/SmolLM2-135M-Instruct.Q4_1.gguf")
calibration_data = load_calibration_samples("data/calib.txt", num_samples=8, max_seq_len=512)
polar_config = PolarQuantConfig(magnitude_bits=2, angle_bits=4, group_size=128)
turbo_config = TurboQuantConfig(codebook_size=256, vector_size=16, num_subspaces=4)
quantizer = TurboQuantPipeline(polar_config, turbo_config)     # = polar-vq:balanced
quantized_model = quantizer.apply(model, calibration_data)

print(quantized_model.generate("The capital of France is", n_predict=24)["text"])
r = quantized_model.perplexity("data/eval.txt", ctx=512, chunks=4)
base = quantized_model.perplexity("data/eval.txt", ctx=512, chunks=4, k="f16", v="f16")
print(f"{quantizer.cache_type}: PPL {r['ppl']:.3f} (f16 {base['ppl']:.3f}), "
      f"bpv K {r['bpv_k']:.2f} V {r['bpv_v']:.2f}")

# The original description's own parameters are no preset: the error lists the presets.
try:
    TurboQuantPipeline(PolarQuantConfig(4, 2, 64), TurboQuantConfig(256, 8, 4))
except tq.Error as e:
    print("Error:", e)
