#pragma once
// The summary tables of the analyses: rows grouped by some of their fields, each field of
// interest averaged over a group.
#include <string>
#include <vector>

#include "nibble/json.hpp"

namespace nibble {

// Groups `rows` (objects) by the values of `keys`, in first-seen order. Each group becomes one
// object with those key values, "tensors" (how many rows it has) and the mean of every field in
// `fields`; a mean over values that are not all finite numbers (an exact reconstruction's
// infinite SNR, a missing value) is null.
Json group_means(const std::vector<Json>& rows, const std::vector<std::string>& keys,
                 const std::vector<std::string>& fields);

}  // namespace nibble
