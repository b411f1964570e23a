#pragma once
// Work shared across the ranks of a data-parallel group by estimated cost, and results gathered
// back in input order: the pieces data-parallel generation and batch prediction have in common.
#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "comm/group.h"

namespace parallama {

// The rank that runs each item: items in decreasing cost (ties: lower index first) each go to
// the rank with the least cost so far (ties: the lowest rank), the longest-processing-time rule,
// whose slowest rank is within 4/3 of the best possible. The same for every rank that calls it.
std::vector<int> share_by_cost(const std::vector<double>& cost, int ranks);

// Rank 0 of g gets every rank's results, ordered by item index (0 .. total-1, each exactly once
// over all ranks); the other ranks get an empty vector. mine: (item index, result) pairs.
// Throws Error when an index is missing, repeated or out of range.
std::vector<std::string> gather_in_order(comm::Group g,
                                         const std::vector<std::pair<int64_t, std::string>>& mine,
                                         int64_t total);

// Rank 0 of g writes `lines` (its own; the others' are not used), one per line, to `path`
// through a temporary file. Every rank throws the Error if that fails.
void write_lines_from_rank0(comm::Group g, const std::vector<std::string>& lines,
                            const std::string& path);

}  // namespace parallama
