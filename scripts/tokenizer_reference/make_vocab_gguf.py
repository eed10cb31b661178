"""Copies a GGUF's metadata (no tensors) into a small vocab-only GGUF, which llama.cpp can load
with vocab_only. Usage: python make_vocab_gguf.py MODEL.gguf OUT.gguf (needs the `gguf` package)."""
import sys

from gguf import GGUFReader, GGUFValueType, GGUFWriter

src, dst = sys.argv[1], sys.argv[2]
r = GGUFReader(src)
w = GGUFWriter(dst, arch=bytes(r.fields["general.architecture"].parts[-1]).decode())
for k, f in r.fields.items():
    if k.startswith("GGUF.") or k == "general.architecture":
        continue
    t = f.types[0]
    if t == GGUFValueType.ARRAY:
        et = f.types[-1]
        if et == GGUFValueType.STRING:
            v = [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        else:
            v = [f.parts[i][0].item() for i in f.data]
        w.add_key_value(k, v, t, sub_type=et)
    elif t == GGUFValueType.STRING:
        w.add_key_value(k, bytes(f.parts[f.data[0]]).decode("utf-8"), t)
    else:
        w.add_key_value(k, f.parts[f.data[0]][0].item(), t)
w.write_header_to_file()
w.write_kv_data_to_file()
w.write_tensors_to_file()
w.close()
