#include "parallel/config.h"

#include "tensor/error.h"

namespace parallama {

Sync parse_sync(const std::string& name) {
  if (const auto s = value_named<Sync>(name)) return *s;
  throw Error("unknown --sync '" + name + "' (choose allreduce, ps, ps-async, local or diloco)");
}

const char* sync_name(Sync s) {
  return name_of(s);
}

PpBalance parse_pp_balance(const std::string& name) {
  if (const auto b = value_named<PpBalance>(name)) return *b;
  throw Error("parallel.pp_balance must be \"cost\", \"measure\" or \"even\", not \"" + name +
              "\"");
}

const char* pp_balance_name(PpBalance b) {
  return name_of(b);
}

Compress parse_compress(const std::string& name) {
  if (const auto c = value_named<Compress>(name)) return *c;
  throw Error("parallel.compress must be \"none\", \"bf16\", \"int8\" or \"powersgd\", not \"" +
              name + "\"");
}

const char* compress_name(Compress c) {
  return name_of(c);
}

OuterCompress parse_outer_compress(const std::string& name) {
  if (const auto c = value_named<OuterCompress>(name)) return *c;
  throw Error("diloco.compress must be \"none\", \"int8\" or \"int4\", not \"" + name + "\"");
}

const char* outer_compress_name(OuterCompress c) {
  return name_of(c);
}

Balance parse_balance(const std::string& name) {
  if (const auto b = value_named<Balance>(name)) return *b;
  throw Error("parallel.balance must be \"static\" or \"dynamic\", not \"" + name + "\"");
}

const char* balance_name(Balance b) {
  return name_of(b);
}

}  // namespace parallama
