// Subcommand registration for the `tq` tool: each tools/tq/cmd_*.cpp defines a setup function
// that adds its CLI11 subcommand and callback, and registers it with TQ_COMMAND(setup, order).
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>
#include <nlohmann/json.hpp>

namespace tq::cli {

using Setup = void (*)(CLI::App& app);
struct Registrar {
  Registrar(Setup setup, int order);
};
#define TQ_COMMAND(fn, order) static ::tq::cli::Registrar tq_registrar_##fn(fn, order)

// Prints one JSON document on stdout (pretty, trailing newline).
void print_json(const nlohmann::json& j);

// The whole file as bytes; a tq::Error "cannot read <what> '<path>'" if it cannot be opened.
std::string read_file(const std::string& path, const std::string& what);

}  // namespace tq::cli
