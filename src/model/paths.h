// Default locations of the model and the evaluation text (DESIGN.md §4), so every command finds them
// the same way.
#pragma once
#include <string>

namespace tq {

// The default model, relative to the repository root (scripts/fetch_model.sh fetches it); the
// one definition the tools' help text and the tests use.
constexpr const char* kDefaultModelFile = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
constexpr const char* kDefaultModelName = "SmolLM2-135M-Instruct (Q4_1)";

// kDefaultModelFile: $TQ_MODEL if set, else <exe dir>/../models/...,
// else ./models/... (the first that exists; the last candidate if none does, so that the error
// message names a sensible path).
std::string default_model_path();

// data/eval.txt: $TQ_TEXT if set, else <exe dir>/../data/eval.txt, else ./data/eval.txt.
std::string default_text_path();

// data/calib.txt: $TQ_CALIB if set, else as default_text_path().
std::string default_calib_path();

}  // namespace tq
