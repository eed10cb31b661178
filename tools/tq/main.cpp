// `tq`: the turboquant command-line tool. Progress and logs go to stderr; results to stdout.
#include <algorithm>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <stdexcept>
#include <string>
#include <vector>

#include "command.h"
#include "tq/error.h"

namespace tq::cli {
namespace {
std::vector<std::pair<int, Setup>>& commands() {
  static std::vector<std::pair<int, Setup>> v;
  return v;
}
}  // namespace

Registrar::Registrar(Setup setup, int order) { commands().emplace_back(order, setup); }

// Strings that are not valid UTF-8 (generated text cut inside a character, a model that emits
// stray bytes) are written with U+FFFD in place of the bad bytes instead of failing the dump;
// exact data travels beside them (generate's "tokens").
void print_json(const nlohmann::json& j) {
  std::cout << j.dump(2, ' ', false, nlohmann::json::error_handler_t::replace) << std::endl;
}

std::string read_file(const std::string& path, const std::string& what) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw tq::Error("cannot read " + what + " '" + path + "'");
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

}  // namespace tq::cli

int main(int argc, char** argv) {
  CLI::App app{
      "tq — turboquant: KV-cache compression to 2-4 bits per value, attention on the codes.\n"
      "Run `tq <command> --help` for each command."};
  app.require_subcommand(1);
  app.set_version_flag("--version", "turboquant 0.1.0");
  auto& cmds = tq::cli::commands();
  std::stable_sort(cmds.begin(), cmds.end(),
                   [](const auto& a, const auto& b) { return a.first < b.first; });
  for (auto& [order, setup] : cmds) setup(app);
  // llama.cpp spells some flags with one dash and several letters (-ctk, -ctv), which CLI11
  // 2.1 cannot declare: rewrite them to their long forms (--ctk, --ctv) before parsing.
  std::vector<std::string> args(argv, argv + argc);
  for (auto& a : args)
    if (a == "-ctk" || a == "-ctv") a = "-" + a;
  std::vector<char*> argv2;
  for (auto& a : args) argv2.push_back(a.data());
  try {
    app.parse(int(argv2.size()), argv2.data());
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tq::Error& e) {
    std::fprintf(stderr, "tq: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    // Every allocation failure ends here, those inside OpenMP regions too (ParallelErrors,
    // core/parallel.h, carries them out of the region).
    std::fprintf(stderr, "tq: error: out of memory\n");
    return 1;
  } catch (const std::length_error&) {  // a container asked for more than max_size()
    std::fprintf(stderr, "tq: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tq: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
