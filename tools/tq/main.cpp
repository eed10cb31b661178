// `tq`: the turboquant command-line tool. Progress and logs go to stderr; results to stdout.
#include <algorithm>
#include <cstdio>
#include <iostream>
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

void print_json(const nlohmann::json& j) { std::cout << j.dump(2) << std::endl; }

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
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const tq::Error& e) {
    std::fprintf(stderr, "tq: error: %s\n", e.what());
    return 1;
  } catch (const std::bad_alloc&) {
    std::fprintf(stderr, "tq: error: out of memory\n");
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "tq: error: %s\n", e.what());
    return 1;
  }
  return 0;
}
