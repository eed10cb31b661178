// Runs the `tq` tool (built alongside the tests) and captures its output and exit status.
#pragma once
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "temp_dir.h"

struct CliResult {
  int status = -1;
  std::string out;  // stdout
  std::string err;  // stderr
};

inline CliResult run_tq(const std::string& args) {
  static int counter = 0;
  const std::string errfile = tq::test::temp_path("err_" + std::to_string(counter++));
  const std::string cmd = std::string(TQ_TOOL_PATH) + " " + args + " 2>" + errfile;
  CliResult r;
  FILE* p = popen(cmd.c_str(), "r");
  if (!p) return r;
  std::array<char, 4096> buf;
  size_t n;
  while ((n = fread(buf.data(), 1, buf.size(), p)) > 0) r.out.append(buf.data(), n);
  const int st = pclose(p);
  r.status = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
  if (FILE* f = fopen(errfile.c_str(), "r")) {
    while ((n = fread(buf.data(), 1, buf.size(), f)) > 0) r.err.append(buf.data(), n);
    fclose(f);
  }
  std::remove(errfile.c_str());
  return r;
}

inline int count_lines(const std::string& s) {
  int n = 0;
  for (char c : s) n += c == '\n';
  return n;
}
