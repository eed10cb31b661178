// Default locations of the model and the evaluation text (SPEC §4), so every command finds them
// the same way.
#pragma once
#include <string>

namespace tq {

// The repository root as seen from the running binary: $TQ_ROOT if set, else the first of
// <exe dir>/.. , <exe dir>/../.. and the current directory that holds a models/ or data/ folder
// (empty string if none does).
std::string repo_root_guess();

// models/SmolLM2-135M-Instruct.Q4_1.gguf: $TQ_MODEL if set, else <exe dir>/../models/...,
// else ./models/... (the first that exists; the last candidate if none does, so that the error
// message names a sensible path).
std::string default_model_path();

// data/eval.txt: $TQ_TEXT if set, else <exe dir>/../data/eval.txt, else ./data/eval.txt.
std::string default_text_path();

// data/calib.txt: $TQ_CALIB if set, else as default_text_path().
std::string default_calib_path();

}  // namespace tq
