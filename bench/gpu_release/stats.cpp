#include "bench/gpu_release/stats.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>

namespace gpumod::gpu_release {

namespace {

double nearest_rank(const std::vector<double>& sorted, double p) {
  const auto rank = static_cast<std::size_t>(std::ceil(p * static_cast<double>(sorted.size())));
  return sorted[std::clamp<std::size_t>(rank, 1, sorted.size()) - 1];
}

}  // namespace

Summary summarize(std::vector<double> values) {
  Summary s;
  s.n = values.size();
  if (values.empty()) return s;
  std::sort(values.begin(), values.end());
  s.min = values.front();
  s.max = values.back();
  s.median = nearest_rank(values, 0.5);
  s.p90 = nearest_rank(values, 0.9);
  return s;
}

std::string table_row(const std::string& label, const Summary& s, int decimals) {
  if (s.n == 0) return "| " + label + " | 0 | - | - | - | - |";
  char buf[256];
  std::snprintf(buf, sizeof buf, "| %s | %zu | %.*f | %.*f | %.*f | %.*f |", label.c_str(), s.n, decimals,
                s.min, decimals, s.median, decimals, s.p90, decimals, s.max);
  return buf;
}

}  // namespace gpumod::gpu_release
