// The one table of `unit_vars` names each command renderer reads (backends/command.cpp renders
// argv from driver + unit_vars). The loader warns about any other name, so a renderer must not
// read a name that is missing here, and a name added to a renderer must be added here.
#pragma once

#include <set>
#include <string>

#include "config/config.hpp"

namespace gpumod::config {

const std::set<std::string>& unit_vars_used_by(Driver driver);

}  // namespace gpumod::config
