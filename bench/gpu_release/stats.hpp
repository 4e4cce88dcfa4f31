// Order statistics for the report: min / median / p90 / max of a set of measurements.
#pragma once

#include <cstddef>
#include <string>
#include <vector>

namespace gpumod::gpu_release {

struct Summary {
  std::size_t n = 0;
  double min = 0, median = 0, p90 = 0, max = 0;
};

// Nearest-rank percentiles (p90 of 12 values is the 11th smallest). Empty input: n == 0.
Summary summarize(std::vector<double> values);
// "| label | n | min | median | p90 | max |" with values printed with `decimals` digits.
std::string table_row(const std::string& label, const Summary& s, int decimals = 1);

}  // namespace gpumod::gpu_release
