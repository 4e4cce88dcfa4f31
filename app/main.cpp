// gpumod: `serve` runs the daemon; every other subcommand is a thin client of its HTTP API.
#include <string>
#include <vector>

#include "app/cli.hpp"
#include "app/serve.hpp"

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && args.front() == "serve") {
    return gpumod::app::run_serve({args.begin() + 1, args.end()});
  }
  return gpumod::app::run_cli(args);
}
