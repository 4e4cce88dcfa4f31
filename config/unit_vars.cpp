#include "config/unit_vars.hpp"

namespace gpumod::config {

const std::set<std::string>& unit_vars_used_by(Driver driver) {
  static const std::set<std::string> llamacpp = {"models_dir", "models_max", "n_gpu_layers", "ctx_size",
                                                 "threads",    "flash_attn", "jinja",        "extra_args",
                                                 "host",       "binary"};
  static const std::set<std::string> vllm = {
      "gpu_mem_util",         "max_model_len", "max_num_seqs", "dtype", "enforce_eager", "runner",
      "tensor_parallel_size", "hf_overrides",  "extra_args",   "host",  "binary"};
  static const std::set<std::string> fastapi = {"app_module", "working_dir", "extra_args",
                                                "host",       "binary",      "python"};
  static const std::set<std::string> generic = {"extra_args", "binary"};
  switch (driver) {
    case Driver::llamacpp:
      return llamacpp;
    case Driver::vllm:
      return vllm;
    case Driver::fastapi:
      return fastapi;
    case Driver::generic:
    case Driver::docker:
      return generic;
  }
  return generic;
}

}  // namespace gpumod::config
