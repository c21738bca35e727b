// SPEC §7 weight quantizers (see weight_quant.hpp).
#include "nibble/qat/weight_quant.hpp"

#include <algorithm>
#include <cmath>
#include <vector>

#include "nibble/error.hpp"
#include "nibble/qat/qat_scalar.hpp"

namespace nibble {
namespace {

using Levels = QatLevels;
Levels levels(const QatSpec& s) { return qat_levels_of(s, 1, 1); }

// The integer behind q: LSQ the clamped level, SEQ round(clamp(x)·n − shift).
int64_t level_of(const QatSpec& s, const Levels& l, double x) {
  if (s.kind == QatQuantizer::LSQ) return static_cast<int64_t>(std::clamp(std::nearbyint(x), l.qn, l.qp));
  return static_cast<int64_t>(std::nearbyint(std::clamp(x, -l.c, l.c) * l.n - l.shift));
}
double q_of_level(const QatSpec& s, const Levels& l, int64_t r) {
  if (s.kind == QatQuantizer::LSQ) return static_cast<double>(r);
  return (static_cast<double>(r) + l.shift) / l.n;
}
int64_t code_offset(const QatSpec& s, const Levels& l) {
  if (s.kind == QatQuantizer::LSQ) return static_cast<int64_t>(-l.qn);
  return s.bits == 2 ? 2 : 1;
}

}  // namespace

QatLevels qat_levels_of(const QatSpec& s, int64_t rows, int64_t cols) {
  QatLevels l;
  l.lsq = s.kind == QatQuantizer::LSQ;
  if (l.lsq) {
    const int b = static_cast<int>(s.bits);
    l.qn = -std::ldexp(1.0, b - 1);
    l.qp = std::ldexp(1.0, b - 1) - 1.0;
    l.grad_scale = 1.0 / std::sqrt(static_cast<double>(rows * cols) * l.qp);
  } else if (s.bits == 2) {
    l.n = 2.0;
    l.shift = 0.5;
  } else {
    l.n = 1.5;
    l.shift = 0.0;
  }
  return l;
}

int qat_levels(const QatSpec& s) {
  if (s.kind == QatQuantizer::LSQ) return 1 << static_cast<int>(s.bits);
  return s.bits == 2 ? 4 : 3;
}

void qat_codes(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols, uint8_t* codes) {
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = levels(s);
  const int64_t off = code_offset(s, l);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const double a = alpha[r * gpr + j / g];
      codes[r * cols + j] = static_cast<uint8_t>(level_of(s, l, w[r * cols + j] / a) + off);
    }
}

void qat_decode(const QatSpec& s, const uint8_t* codes, const float* alpha, int64_t rows, int64_t cols, float* w_hat) {
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = levels(s);
  const int64_t off = code_offset(s, l);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) {
      const double a = alpha[r * gpr + j / g];
      w_hat[r * cols + j] = static_cast<float>(a * q_of_level(s, l, static_cast<int64_t>(codes[r * cols + j]) - off));
    }
}

QatSpec QatSpec::make(double bits, const std::string& quantizer, int64_t group_size) {
  QatSpec s;
  const bool ternary = std::fabs(bits - 1.58) < 1e-9;
  if (!(ternary || bits == 2 || bits == 3 || bits == 4))
    fail("QAT bits ", bits, " (SPEC §7 defines 1.58 (ternary), 2, 3 and 4)");
  s.bits = ternary ? 1.58 : bits;
  if (quantizer == "auto") s.kind = (ternary || bits == 2) ? QatQuantizer::SEQ : QatQuantizer::LSQ;
  else if (quantizer == "lsq") s.kind = QatQuantizer::LSQ;
  else if (quantizer == "seq") s.kind = QatQuantizer::SEQ;
  else fail("QAT quantizer '", quantizer, "' (use auto, lsq or seq)");
  if (s.kind == QatQuantizer::LSQ && (ternary || bits == 2)) fail("LSQ is defined for 3 and 4 bits (SPEC §7); use seq");
  if (s.kind == QatQuantizer::SEQ && bits > 2) fail("SEQ is defined for 2 bits and ternary (SPEC §7); use lsq");
  if (group_size < 0) fail("QAT group size ", group_size, " is negative");
  s.group_size = group_size;
  return s;
}

int64_t QatSpec::groups_per_row(int64_t cols) const {
  if (group_size == 0) return 1;
  if (cols % group_size != 0) fail("QAT group size ", group_size, " does not divide the row length ", cols);
  return cols / group_size;
}

void qat_init_scales(const QatSpec& s, const float* w, int64_t rows, int64_t cols, float* alpha) {
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = levels(s);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < gpr; ++k) {
      float m = 0;
      for (int64_t j = 0; j < g; ++j) m = std::max(m, std::fabs(w[r * cols + k * g + j]));
      // an all-zero group keeps a positive scale (x = 0 then quantizes to 0 either way)
      const double a = s.kind == QatQuantizer::LSQ ? m / l.qp : m;
      alpha[r * gpr + k] = static_cast<float>(a > 0 ? a : 1e-8);
    }
}

void qat_forward(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols, float* w_hat) {
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = levels(s);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) w_hat[r * cols + j] = qat_fake_quant(l, w[r * cols + j], alpha[r * gpr + j / g]);
}

void qat_backward(const QatSpec& s, const float* w, const float* alpha, int64_t rows, int64_t cols,
                  const float* d_what, float* d_w, float* d_alpha) {
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = qat_levels_of(s, rows, cols);
  const double scale = l.grad_scale;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t k = 0; k < gpr; ++k) {
      const double a = alpha[r * gpr + k];
      double acc = 0;
      for (int64_t j = k * g; j < (k + 1) * g; ++j) {
        bool inside;
        double da;
        qat_quantize(l, w[r * cols + j] / a, inside, da);
        const double gy = d_what[r * cols + j];
        d_w[r * cols + j] = inside ? static_cast<float>(gy) : 0.0f;
        acc += gy * da;
      }
      d_alpha[r * gpr + k] = static_cast<float>(d_alpha[r * gpr + k] + scale * acc);
    }
}

void winq_reset(const QatSpec& s, float* w, const float* alpha, int64_t rows, int64_t cols, double a) {
  if (!(a >= 0 && a <= 1)) fail("WinQ reset weight a = ", a, " must be in [0, 1]");
  const int64_t gpr = s.groups_per_row(cols), g = cols / gpr;
  const Levels l = levels(s);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t j = 0; j < cols; ++j) w[r * cols + j] = qat_winq_reset(l, w[r * cols + j], alpha[r * gpr + j / g], a);
}

}  // namespace nibble
