// One-off for the sweep: copy a stage-1-only polar-vq codebook file with other stage-1 key/value
// parameters of the same angle_bits (the file holds only angle codebooks, which depend on
// angle_bits alone, and the value order, which depends on nothing: `tq calibrate` would write
// the same data). Usage: retag IN OUT KEY=VALUE...
#include <cstdio>
#include <cstdlib>
#include <string>
#include "codecs/polarvq_file.h"
int main(int argc, char** argv) {
  if (argc < 4) return 2;
  tq::CodebookFile f = tq::read_codebook_file(argv[1]);
  if (f.params.vq_size > 0 && f.params.vq_keys) { std::fprintf(stderr, "has key stage 2\n"); return 1; }
  for (int i = 3; i < argc; ++i) {
    std::string a = argv[i];
    auto eq = a.find('=');
    std::string k = a.substr(0, eq);
    int v = std::atoi(a.c_str() + eq + 1);
    auto& p = f.params;
    if (k == "key_block_tokens") p.key_block_tokens = v;
    else if (k == "mag_bits") p.mag_bits = v;
    else if (k == "value_bits" && !p.vq_values) p.value_bits = v;
    else if (k == "value_bits" && p.vq_size == 0) p.value_bits = v;
    else if (k == "value_group" && p.vq_size == 0) p.value_group = v;
    else if (k == "group_size") p.group_size = v;
    else { std::fprintf(stderr, "cannot change %s\n", k.c_str()); return 1; }
  }
  f.params.preset = "custom";
  tq::write_codebook_file(argv[2], f);
  return 0;
}
