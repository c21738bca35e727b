#pragma once
// One error type for everything a user can get wrong (bad files, bad options, bad
// configs) and for broken internal invariants. Messages name the file, field and value.
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace nibble {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A NaN or Inf where numbers must be finite (quantizer inputs, losses): a diverged run, not
// a malformed file. The trainer turns it into a clean stop at the last good checkpoint.
class NonFiniteValue : public Error {
 public:
  using Error::Error;
};

namespace detail {
template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}
}  // namespace detail

// Throws nibble::Error with the parts streamed together: fail("file ", path, ": bad magic").
template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(detail::concat(std::forward<Parts>(parts)...));
}

}  // namespace nibble

// Internal invariant (a bug if it fires, not a user error).
#define NIBBLE_CHECK(cond, ...)                                                        \
  do {                                                                                 \
    if (!(cond))                                                                       \
      ::nibble::fail("internal error at ", __FILE__, ":", __LINE__, ": ", #cond, " ",  \
                     ##__VA_ARGS__);                                                   \
  } while (0)
