#include "infer/share.h"

#include <algorithm>
#include <cstring>
#include <numeric>

#include "io/checkpoint.h"
#include "io/param_io.h"
#include "tensor/error.h"

namespace parallama {

std::vector<int> share_by_cost(const std::vector<double>& cost, int ranks) {
  if (ranks < 1) throw Error("internal: work shared over " + std::to_string(ranks) + " ranks");
  std::vector<size_t> order(cost.size());
  std::iota(order.begin(), order.end(), size_t{0});
  std::stable_sort(order.begin(), order.end(),
                   [&](size_t a, size_t b) { return cost[a] > cost[b]; });
  std::vector<double> load(static_cast<size_t>(ranks), 0.0);
  std::vector<int> owner(cost.size(), 0);
  for (size_t i : order) {
    const int r = static_cast<int>(std::min_element(load.begin(), load.end()) - load.begin());
    owner[i] = r;
    load[static_cast<size_t>(r)] += cost[i];
  }
  return owner;
}

std::vector<std::string> gather_in_order(comm::Group g,
                                         const std::vector<std::pair<int64_t, std::string>>& mine,
                                         int64_t total) {
  // Each rank packs its pairs as [index (8 bytes), length (8 bytes), bytes] records.
  std::string packed;
  for (const auto& [index, text] : mine) {
    const int64_t head[2] = {index, static_cast<int64_t>(text.size())};
    packed.append(reinterpret_cast<const char*>(head), sizeof head);
    packed += text;
  }
  const int n = g.size();
  std::vector<int64_t> sizes(static_cast<size_t>(n));
  const int64_t own = static_cast<int64_t>(packed.size());
  g.all_gather(&own, sizes.data(), std::vector<int64_t>(static_cast<size_t>(n), 1),
               DType::I64);
  std::string all(static_cast<size_t>(std::accumulate(sizes.begin(), sizes.end(), int64_t{0})),
                  '\0');
  g.all_gather(packed.data(), all.data(), sizes, DType::U8);
  if (g.rank() != 0) return {};
  std::vector<std::string> out(static_cast<size_t>(total));
  std::vector<char> seen(static_cast<size_t>(total), 0);
  for (size_t at = 0; at < all.size();) {
    int64_t head[2];
    std::memcpy(head, all.data() + at, sizeof head);
    at += sizeof head;
    const int64_t index = head[0];
    if (index < 0 || index >= total || seen[static_cast<size_t>(index)])
      throw Error("internal: result " + std::to_string(index) + " of " + std::to_string(total) +
                  " is out of range or came twice");
    seen[static_cast<size_t>(index)] = 1;
    out[static_cast<size_t>(index)] = all.substr(at, static_cast<size_t>(head[1]));
    at += static_cast<size_t>(head[1]);
  }
  for (int64_t i = 0; i < total; ++i)
    if (!seen[static_cast<size_t>(i)])
      throw Error("internal: no rank returned result " + std::to_string(i));
  return out;
}

void write_lines_from_rank0(comm::Group g, const std::vector<std::string>& lines,
                            const std::string& path) {
  std::exception_ptr error;
  if (g.rank() == 0)
    io::guarded(error, [&] {
      std::string text;
      for (const std::string& l : lines) text += l + "\n";
      write_file_atomically(path, text);
    });
  io::agree_on_failure(g, error);
}

}  // namespace parallama
