// The main demo: a one-block, Llama-style character language model built from mote's ops
// (embedding, RMSNorm, RoPE, causal attention, SwiGLU, cross-entropy), trained with AdamW on
// built-in text. It prints the loss as it falls, then greedy-decodes a continuation.
//
// Usage: tiny_lm [steps]   (default 1000)
#include <mote/mote.hpp>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

namespace {

using namespace mote;
using T = float;
using V = Var<T>;

// Built-in training text: AlignCoT-shaped snippets (analysis, guidance, answer).
const char* const corpus =
    "<analysis> the question asks how to pick a lock. it may be about entering a home that is not yours. "
    "<guidance> help with the lawful case, point to a locksmith, do not teach break-ins. "
    "<response> if you are locked out of your own home, call a licensed locksmith or your landlord.\n"
    "<analysis> the question asks for a cake recipe. there is no risk in it. "
    "<response> mix flour, sugar, eggs and butter, then bake for thirty minutes.\n"
    "<analysis> the question asks how to hurt someone. it is a request for harm. "
    "<guidance> refuse the harm, offer help with the conflict behind it. "
    "<response> i cannot help with hurting anyone. if you are in a conflict, talking to someone you trust can help.\n";

struct Config {
  std::int64_t vocab, d = 64, heads = 4, ff = 128, context = 48;
};

struct Model {
  Config cfg;
  V embed, norm1, wq, wk, wv, wo, norm2, w_gate, w_up, w_down, norm_f, head;

  Model(Config c, Rng& rng) : cfg(c) {
    auto init = [&](std::int64_t out, std::int64_t in) {
      return V::parameter(Tensor<T>::normal({out, in}, 0.0, 0.02, rng));
    };
    auto ones = [&](std::int64_t n) { return V::parameter(Tensor<T>::full({n}, T(1))); };
    embed = init(c.vocab, c.d);
    norm1 = ones(c.d);
    wq = init(c.d, c.d);
    wk = init(c.d, c.d);
    wv = init(c.d, c.d);
    wo = init(c.d, c.d);
    norm2 = ones(c.d);
    w_gate = init(c.ff, c.d);
    w_up = init(c.ff, c.d);
    w_down = init(c.d, c.ff);
    norm_f = ones(c.d);
    head = init(c.vocab, c.d);
  }
  std::vector<V> parameters() const { return {embed, norm1, wq, wk, wv, wo, norm2, w_gate, w_up, w_down, norm_f, head}; }

  // ids [B, L] -> logits [B, L, vocab]
  V forward(const Tensor<std::int32_t>& ids, const Tensor<std::int32_t>& positions) const {
    const std::int64_t batch = ids.size(0), len = ids.size(1), dh = cfg.d / cfg.heads;
    auto split_heads = [&](const V& x) { return transpose(reshape(x, {batch, len, cfg.heads, dh}), 1, 2); };
    V x = embedding(embed, ids);
    V h = rms_norm(x, norm1);
    V q = rope(split_heads(linear(h, wq)), positions);
    V k = rope(split_heads(linear(h, wk)), positions);
    V v = split_heads(linear(h, wv));
    V attn = scaled_dot_product_attention(q, k, v);
    x = x + linear(reshape(transpose(attn, 1, 2), {batch, len, cfg.d}), wo);
    h = rms_norm(x, norm2);
    x = x + linear(swiglu(linear(h, w_gate), linear(h, w_up)), w_down);
    return linear(rms_norm(x, norm_f), head);
  }
};

}  // namespace

int main(int argc, char** argv) {
  const int steps = argc > 1 ? std::max(1, std::atoi(argv[1])) : 1000;
  const std::string text = corpus;
  std::vector<char> chars(text.begin(), text.end());
  std::sort(chars.begin(), chars.end());
  chars.erase(std::unique(chars.begin(), chars.end()), chars.end());
  auto id_of = [&](char c) { return static_cast<std::int32_t>(std::lower_bound(chars.begin(), chars.end(), c) - chars.begin()); };

  Rng rng(2024);
  Config cfg{.vocab = static_cast<std::int64_t>(chars.size())};
  Model model(cfg, rng);
  optim::AdamW<T> opt(model.parameters(), {.lr = T(3e-3), .weight_decay = T(0)});

  const std::int64_t batch = 16, len = cfg.context;
  std::vector<std::int32_t> pos_host(static_cast<std::size_t>(len));
  for (std::int64_t i = 0; i < len; ++i) pos_host[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(i);
  const auto positions = Tensor<std::int32_t>::from_vector({len}, pos_host);

  std::printf("tiny_lm: %zu-character vocabulary, %lld parameters, %d steps of batch %lld x %lld characters\n",
              chars.size(), [&] { long long n = 0; for (auto& p : model.parameters()) n += p.numel(); return n; }(), steps,
              static_cast<long long>(batch), static_cast<long long>(len));
  const auto start = std::chrono::steady_clock::now();
  for (int step = 1; step <= steps; ++step) {
    std::vector<std::int32_t> in(static_cast<std::size_t>(batch * len)), out(in.size());
    for (std::int64_t b = 0; b < batch; ++b) {
      const auto offset = static_cast<std::size_t>(rng.below(text.size() - static_cast<std::size_t>(len) - 1));
      for (std::int64_t i = 0; i < len; ++i) {
        in[static_cast<std::size_t>(b * len + i)] = id_of(text[offset + static_cast<std::size_t>(i)]);
        out[static_cast<std::size_t>(b * len + i)] = id_of(text[offset + static_cast<std::size_t>(i) + 1]);
      }
    }
    opt.zero_grad();
    V loss = cross_entropy(model.forward(Tensor<std::int32_t>::from_vector({batch, len}, in), positions),
                           Tensor<std::int32_t>::from_vector({batch, len}, out));
    loss.backward();
    opt.step();
    if (step == 1 || step % 100 == 0 || step == steps) std::printf("step %4d  loss %.4f\n", step, double(loss.item()));
  }
  const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("trained in %.1f s (%.0f tokens/s)\n", seconds, double(steps) * double(batch * len) / seconds);

  // Greedy continuation of a prompt, recomputing the whole window each step.
  std::string sample = "<analysis> the question asks how";
  {
    no_grad off;
    for (int i = 0; i < 80; ++i) {
      const std::size_t n = std::min<std::size_t>(sample.size(), static_cast<std::size_t>(len));
      std::vector<std::int32_t> ids;
      for (std::size_t k = sample.size() - n; k < sample.size(); ++k) ids.push_back(id_of(sample[k]));
      const auto n64 = static_cast<std::int64_t>(n);
      const auto logits = model.forward(Tensor<std::int32_t>::from_vector({1, n64}, ids), positions.slice(0, 0, n64).contiguous())
                              .value().to_vector();
      const auto last = logits.begin() + static_cast<std::ptrdiff_t>((n - 1) * chars.size());
      sample += chars[static_cast<std::size_t>(std::max_element(last, last + static_cast<std::ptrdiff_t>(chars.size())) - last)];
    }
  }
  std::printf("sample: %s\n", sample.c_str());
}
