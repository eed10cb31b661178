// Numeric options of the tool, range-checked where they enter (core/numeric_flag.h): a value
// outside the stated range is refused with one line, never clamped or reinterpreted.
#pragma once
#include <CLI/CLI.hpp>
#include <string>

#include "core/numeric_flag.h"

namespace tq::cli {

// The name a message uses for "-c,--ctx-size": the last (long) one.
inline std::string flag_label(const std::string& names) {
  const auto comma = names.rfind(',');
  return comma == std::string::npos ? names : names.substr(comma + 1);
}

// An integer option stored in `target` (int, int64_t, size_t, uint64_t) if it lies in [lo, hi].
template <class T>
CLI::Option* add_int_option(CLI::App* cmd, const std::string& names, T& target, int64_t lo,
                            int64_t hi, const std::string& help) {
  const std::string label = flag_label(names);
  return cmd
      ->add_option_function<std::string>(
          names,
          [&target, label, lo, hi](const std::string& s) {
            target = T(tq::parse_int_flag(label, s, lo, hi));
          },
          help + " [" + std::to_string(lo) + ".." + std::to_string(hi) + "]")
      ->type_name("INT")
      ->default_str(std::to_string(target));
}

// A floating-point option (finite, in [lo, hi]).
template <class T>
CLI::Option* add_float_option(CLI::App* cmd, const std::string& names, T& target, double lo,
                              double hi, const std::string& help) {
  const std::string label = flag_label(names);
  return cmd
      ->add_option_function<std::string>(
          names,
          [&target, label, lo, hi](const std::string& s) {
            target = T(tq::parse_float_flag(label, s, lo, hi));
          },
          help)
      ->type_name("FLOAT")
      ->default_str(std::to_string(target));
}

}  // namespace tq::cli
