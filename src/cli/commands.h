#pragma once
// Subcommands of the parallama program.
#include <string>
#include <vector>

#include "comm/group.h"
#include "infer/commands.h"
#include "interop/convert.h"
#include "train/info.h"
#include "train/plan_command.h"
#include "train/run_config.h"

namespace CLI {
class App;
}

namespace parallama {

// `prepare-classify`, `finetune --task classify` and `classify` (cli/finetune.cpp): added to the
// app before parsing; run_finetune_commands runs the one that `sub` is, or returns -1.
struct FinetuneCommands;
FinetuneCommands* add_finetune_commands(CLI::App& app);
int run_finetune_commands(const FinetuneCommands* cmds, const CLI::App* sub, comm::Group world);
// The subcommands that run under mpirun (finetune, classify).
std::vector<CLI::App*> finetune_subcommands(const FinetuneCommands* cmds);

}  // namespace parallama
