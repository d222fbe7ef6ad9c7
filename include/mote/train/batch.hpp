#pragma once
// What the trainer consumes: a batch of token rows with everything one forward pass needs (targets,
// per-token loss weights, positions, an attention mask, route ids), and the Dataset concept that
// builds such batches from examples. train/ knows no AlignCoT: aligncot/ is one Dataset among others.
#include <concepts>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>
#include <vector>

#include "mote/backend/concept.hpp"
#include "mote/core/tensor.hpp"

namespace mote::train {

// One micro-batch of `rows` token rows of `length` tokens. The trainer's loss is the mean over the targets
// that count (target != -100), each at its loss weight, across every micro-batch of an optimizer step. Every tensor is [rows, length] row-major
// unless said otherwise; an undefined optional tensor means its default.
template <Real T, Backend B = cpu>
struct Batch {
  Tensor<std::int32_t, B> ids;      // input tokens
  Tensor<std::int32_t, B> targets;  // next-token targets; -100 = no loss (padding, questions)
  Tensor<T, B> loss_weights;        // optional per-token weights; undefined = 1 where target != -100
  Tensor<std::int32_t, B> positions;  // optional position ids; undefined = 0 .. length - 1 in every row
  Tensor<std::uint8_t, B> mask;       // optional [rows, length, length] attention mask (1 = may attend), with causal
  Tensor<std::int32_t, B> routes;     // optional route ids for step routers; -1 = the router's open-token policy
  // Optional per-token group of each target (an AlignCoT stage), indexing Dataset::group_names(); -1 = none.
  // The trainer reports evaluation loss per group from it. Host-side, rows * length entries.
  std::vector<std::int32_t> target_groups;
  std::int64_t examples = 0;  // how many dataset examples the batch holds (0: the trainer counts the indices)
  std::int64_t tokens = 0;    // input tokens that are not padding, for tokens/s (0: the trainer counts rows * length)
};

// A source of training examples. batch(indices, epoch) builds one micro-batch from those examples; it
// must be a pure function of its arguments (the same indices and epoch give the same batch), since
// the trainer's exact resume rebuilds batches rather than storing them. `epoch` lets a dataset redraw
// per-epoch randomness (step-skip masks) from a seeded stream.
template <class D, class T, class B = cpu>
concept Dataset = requires(const D& d, std::span<const std::size_t> indices, std::uint64_t epoch) {
  { d.size() } -> std::convertible_to<std::size_t>;
  { d.batch(indices, epoch) } -> std::same_as<Batch<T, B>>;
  { d.group_names() } -> std::convertible_to<std::vector<std::string>>;
  // Names what the data is (pipeline, file, example count); a resume must find the same description.
  { d.fingerprint() } -> std::convertible_to<std::string>;
};

}  // namespace mote::train
